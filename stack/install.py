"""Lay out the runtime that the wheels bundle: Triton's server and Python backend, perf_analyzer's libraries.

Idempotent: every step checks what is already in place, so a second run takes well under a second.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

from stack import paths

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# perf_analyzer from the tritonclient 2.51 wheel links these sonames; nvidia_pytriton.libs has them renamed.
PERF_ANALYZER_LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


class SetupError(RuntimeError):
    """A prerequisite is missing; the message says what to install."""


def pytriton_libs() -> Path:
    return paths.site_packages() / "nvidia_pytriton.libs"


def libpython_dir() -> Path:
    """Directory holding the running interpreter's libpython, which the backend stub links."""
    soname = f"libpython{PYTHON_VERSION}.so.1.0"
    candidates = [Path(sysconfig.get_config_var("LIBDIR") or ""), Path("/usr/lib/x86_64-linux-gnu"),
                  Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib")]
    for directory in candidates:
        if (directory / soname).exists():
            return directory
    raise SetupError(
        f"{soname} not found (looked in {', '.join(map(str, candidates))}). Triton's Python backend stub "
        f"links it: install it with `apt-get install libpython{PYTHON_VERSION}` or use a Python built "
        "with --enable-shared."
    )


def install_triton() -> Path:
    """Copy the bundled tritonserver tree and put the stub for this Python into backends/python/."""
    source = paths.package_dir("pytriton") / "tritonserver"
    stub = source / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub"
    if not stub.exists():
        raise SetupError(f"nvidia-pytriton ships no Python backend stub for Python {PYTHON_VERSION}")
    target_stub = paths.BACKENDS_DIR / "python" / "triton_python_backend_stub"
    if paths.TRITON_BIN.exists() and target_stub.exists():
        return paths.TRITON_HOME
    if paths.TRITON_HOME.exists():
        shutil.rmtree(paths.TRITON_HOME)
    shutil.copytree(source, paths.TRITON_HOME, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
    shutil.copy2(stub, target_stub)
    return paths.TRITON_HOME


def install_shared_libs() -> Path:
    """Give perf_analyzer the sonames it asks for, pointing at the copies the pytriton wheel carries."""
    paths.LIB_DIR.mkdir(parents=True, exist_ok=True)
    for soname, pattern in PERF_ANALYZER_LIBS.items():
        link = paths.LIB_DIR / soname
        if link.exists():
            continue
        matches = sorted(pytriton_libs().glob(pattern))
        if not matches:
            raise SetupError(f"{pattern} not found in {pytriton_libs()}")
        link.unlink(missing_ok=True)
        link.symlink_to(matches[0])
    return paths.LIB_DIR


def library_path() -> str:
    """LD_LIBRARY_PATH for tritonserver, its Python stub and perf_analyzer."""
    return ":".join(str(p) for p in (libpython_dir(), pytriton_libs(), paths.LIB_DIR))


def install_all() -> None:
    from stack import llm_assets

    steps = [
        ("Triton server + Python backend", install_triton),
        ("perf_analyzer libraries", install_shared_libs),
        ("libpython for the backend stub", libpython_dir),
        ("LLM tokenizer exported from the GGUF", llm_assets.export_tokenizer),
    ]
    for label, step in steps:
        print(f"  - {label} ...", end=" ", flush=True)
        print(step(), flush=True)
