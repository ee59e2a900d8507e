"""Dependencies between the project's packages point one way (docs/architecture.md, "Packages"):
model_assets ← cpu_engine, orchestrator ← stack, clients; the Triton models import model_assets and cpu_engine only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from model_assets.paths import PROJECT_ROOT

PACKAGES = ("model_assets", "cpu_engine", "orchestrator", "stack", "clients")
#: What each part may import of the project (anything else of PACKAGES is a layering error).
ALLOWED = {
    "model_assets": {"model_assets"},
    "cpu_engine": {"model_assets", "cpu_engine"},
    "model_repository": {"model_assets", "cpu_engine"},
    "orchestrator": {"model_assets", "orchestrator"},
}


def project_imports(path: Path) -> set[str]:
    """The top-level project packages a file imports, wherever the import stands (lazy ones included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_lies_below_it(part: str) -> None:
    wrong = {str(path.relative_to(PROJECT_ROOT)): sorted(project_imports(path) - ALLOWED[part])
             for path in sorted((PROJECT_ROOT / part).rglob("*.py"))}
    assert {path: names for path, names in wrong.items() if names} == {}
