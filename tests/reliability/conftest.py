"""Fixtures of the reliability tests.

`orchestrator`: one orchestrator child process on the session's Triton and Valkey (which other tests use, so
nothing here kills them; tests/orchestrators.py), with tenants acme/beta, an admin key, a low per-key rate
limit for one key and its own log file (read by the no-secrets-in-logs test). The fault tests start their own
Valkey + Triton + orchestrator trio (tests/reliability/test_faults.py) because they kill those processes.
Figures for docs/reliability.md are printed as `RELIABILITY {json}` lines (`report`; run with -s to see them).

Full-length runs: RELIABILITY_FULL=1 (schemathesis and gRPC fuzz case counts, soak length); see
docs/reliability.md.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.orchestrator_process import OrchestratorProcess
from tests import orchestrators

ACME_KEY, BETA_KEY, LIMITED_KEY = "sk-rel-acme-5b1f0c", "sk-rel-beta-93d2aa", "sk-rel-limited-77e0c4"
ADMIN_KEY = "sk-rel-admin-c0ffee"
KEYS = {ACME_KEY: {"tenant": "acme"}, BETA_KEY: {"tenant": "beta"},
        LIMITED_KEY: {"tenant": "limited", "rate_limit_rps": 2, "rate_limit_burst": 3}}
FULL = os.environ.get("RELIABILITY_FULL") == "1"


#: ORCH_* settings of an orchestrator with these keys: orchestrator_env(key_prefix, **more settings).
orchestrator_env = functools.partial(orchestrators.orchestrator_env, KEYS, ADMIN_KEY)
orchestrator = orchestrators.orchestrator_fixture("rel", KEYS, ADMIN_KEY)


def report(name: str, **figures: object) -> None:
    """One figure line for docs/reliability.md."""
    print(f"RELIABILITY {json.dumps({'test': name, **figures})}")


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def orchestrator_log(orchestrator: OrchestratorProcess) -> Path:
    return orchestrator.log_path_used


@pytest.fixture(scope="session")
def key_prefix(orchestrator: OrchestratorProcess) -> str:
    return orchestrator.env["ORCH_REDIS__KEY_PREFIX"]


@pytest.fixture(scope="session")
def http(orchestrator: OrchestratorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=orchestrator.http_url, timeout=120) as client:
        yield client
