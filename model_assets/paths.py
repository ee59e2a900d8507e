"""Where the project and its local runtime folder are, and where an installed wheel keeps its files."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Project-local folder for what set-up extracts (Triton, libraries, exported tokenizer).
STACK_HOME = Path(os.environ.get("STACK_HOME", PROJECT_ROOT / ".stack"))
MODELS_DIR = STACK_HOME / "models"


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))
