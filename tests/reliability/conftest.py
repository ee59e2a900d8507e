"""Fixtures of the reliability tests.

`orchestrator`: one orchestrator child process on the session's Triton and Valkey (which other tests use, so
nothing here kills them), with tenants acme/beta, an admin key, a low per-key rate limit for one key and its
own log file (read by the no-secrets-in-logs test). The fault tests start their own Valkey + Triton +
orchestrator trio (tests/reliability/test_faults.py) because they kill those processes.

Full-length runs: RELIABILITY_FULL=1 (schemathesis and gRPC fuzz case counts, soak length); see
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.config import ModelSettings
from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from stack.valkey import ValkeyServer

MODEL = ModelSettings().name
ACME_KEY, BETA_KEY, LIMITED_KEY = "sk-rel-acme-5b1f0c", "sk-rel-beta-93d2aa", "sk-rel-limited-77e0c4"
ADMIN_KEY = "sk-rel-admin-c0ffee"
KEYS = {ACME_KEY: {"tenant": "acme"}, BETA_KEY: {"tenant": "beta"},
        LIMITED_KEY: {"tenant": "limited", "rate_limit_rps": 2, "rate_limit_burst": 3}}
FULL = os.environ.get("RELIABILITY_FULL") == "1"


def orchestrator_env(key_prefix: str, **extra: str) -> dict[str, str]:
    return {
        "ORCH_API__KEYS": json.dumps(KEYS),
        "ORCH_API__ADMIN_KEY": ADMIN_KEY,
        "ORCH_REDIS__KEY_PREFIX": key_prefix,
        **extra,
    }


def chat(content: str, max_tokens: int = 4, **fields: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            **fields}


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def orchestrator_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability-logs") / "orchestrator.log"


@pytest.fixture(scope="session")
def key_prefix() -> str:
    return f"rel-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def orchestrator(triton: TritonServer, valkey: ValkeyServer, orchestrator_log: Path,
                 key_prefix: str) -> Iterator[OrchestratorProcess]:
    with OrchestratorProcess(triton.grpc_url, valkey.url, env=orchestrator_env(key_prefix),
                             log_path=orchestrator_log) as server:
        yield server


@pytest.fixture(scope="session")
def http(orchestrator: OrchestratorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=orchestrator.http_url, timeout=120) as client:
        yield client
