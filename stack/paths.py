"""Where the project, its local runtime folder and the wheels' bundled files live."""

from __future__ import annotations

import sys
from pathlib import Path

#: The project root, the runtime folder (STACK_HOME) and package_dir are the models' too: defined there.
from model_assets.paths import PROJECT_ROOT, STACK_HOME, package_dir

MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
PROFILES_DIR = MODEL_REPOSITORY / "profiles"
#: The semantic cache's evaluation sets (sources and licences in its README.md).
SEMANTIC_DATA_DIR = PROJECT_ROOT / "data" / "semantic"

TRITON_HOME = STACK_HOME / "tritonserver"
TRITON_BIN = TRITON_HOME / "bin" / "tritonserver"
BACKENDS_DIR = TRITON_HOME / "backends"
LIB_DIR = STACK_HOME / "lib"

#: The directory of the running interpreter's executables (the venv's bin when run from the venv).
PYTHON_BIN_DIR = Path(sys.executable).parent


def site_packages() -> Path:
    return package_dir("pytriton").parent
