"""Where the project, its local runtime folder and the wheels' bundled files live."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
PROFILES_DIR = MODEL_REPOSITORY / "profiles"
#: The semantic cache's evaluation sets (sources and licences in its README.md).
SEMANTIC_DATA_DIR = PROJECT_ROOT / "data" / "semantic"

#: Project-local folder for what set-up extracts (Triton, libraries, exported tokenizer).
STACK_HOME = Path(os.environ.get("STACK_HOME", PROJECT_ROOT / ".stack"))
TRITON_HOME = STACK_HOME / "tritonserver"
TRITON_BIN = TRITON_HOME / "bin" / "tritonserver"
BACKENDS_DIR = TRITON_HOME / "backends"
LIB_DIR = STACK_HOME / "lib"
MODELS_DIR = STACK_HOME / "models"

#: The directory of the running interpreter's executables (the venv's bin when run from the venv).
PYTHON_BIN_DIR = Path(sys.executable).parent


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def site_packages() -> Path:
    return package_dir("pytriton").parent
