"""The orchestrator as the e2e and reliability tests run it: `python -m orchestrator serve` as a child process
on free loopback ports, in front of the session's Triton and Valkey, with API keys, an admin key, its own key
prefix (other tests share the Valkey server) and its own log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from stack.valkey import ValkeyServer


def orchestrator_env(keys: Mapping[str, object], admin_key: str, key_prefix: str, **extra: str) -> dict[str, str]:
    """ORCH_* settings with these keys (ORCH_API__KEYS' shape) and key prefix; `extra`: further settings."""
    return {"ORCH_API__KEYS": json.dumps(keys), "ORCH_API__ADMIN_KEY": admin_key,
            "ORCH_REDIS__KEY_PREFIX": key_prefix, **extra}


def orchestrator_fixture(name: str, keys: Mapping[str, object], admin_key: str, fixture_name: str = "orchestrator",
                         **extra: str) -> Callable:
    """A session-wide orchestrator fixture called `fixture_name` (its keys prefixed `name-`, its log in a `name`
    folder; `extra`: further ORCH_* settings). The prefix is `orchestrator.env["ORCH_REDIS__KEY_PREFIX"]`, the
    log `orchestrator.log_path_used`."""

    @pytest.fixture(scope="session", name=fixture_name)
    def orchestrator(triton: TritonServer, valkey: ValkeyServer, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[OrchestratorProcess]:
        env = orchestrator_env(keys, admin_key, f"{name}-{uuid.uuid4().hex[:8]}", **extra)
        log_path = tmp_path_factory.mktemp(f"{name}-logs") / "orchestrator.log"
        with OrchestratorProcess(triton.grpc_url, valkey.url, env=env, log_path=log_path) as server:
            yield server

    return orchestrator
