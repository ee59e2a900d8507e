"""Session-wide real servers: one Valkey (RediSearch loaded) and one Triton on the rendered CPU profile.

Both start on free loopback ports on first use and are stopped at the end of the session, also when tests
fail. Triton runs with explicit model control (every model loaded at start), so tests may reload a model
with a config override; a test that does so must restore it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.render import render
from stack.triton import TritonServer
from stack.valkey import ValkeyServer

TEST_MODELS = Path(__file__).parent / "triton_models"


@pytest.fixture(scope="session")
def valkey() -> Iterator[ValkeyServer]:
    with ValkeyServer() as server:
        yield server


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = render("cpu", tmp_path_factory.mktemp("repository") / "cpu")
    for config in TEST_MODELS.glob("*/config.pbtxt"):
        shutil.copytree(config.parent, repository / config.parent.name, ignore=shutil.ignore_patterns("__pycache__"))
    return repository


@pytest.fixture(scope="session")
def triton(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = TritonServer(
        triton_repository,
        model_control_mode="explicit",
        load_models=("*",),
        log_path=tmp_path_factory.mktemp("logs") / "triton.log",
    )
    with server:
        yield server
