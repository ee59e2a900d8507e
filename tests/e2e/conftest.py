"""The orchestrator as users run it (`python -m orchestrator serve`, a child process) on free loopback ports,
in front of the session's real Triton and Valkey, with two tenants and an admin key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from stack.orchestrator_process import OrchestratorProcess
from stack.triton import TritonServer
from stack.valkey import ValkeyServer

KEYS = {"sk-e2e-acme": {"tenant": "acme"}, "sk-e2e-beta": {"tenant": "beta"}, "sk-e2e-gamma": {"tenant": "gamma"}}
ADMIN_KEY = "sk-e2e-admin"


@pytest.fixture(scope="session")
def orchestrator(triton: TritonServer, valkey: ValkeyServer, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[OrchestratorProcess]:
    log_path: Path = tmp_path_factory.mktemp("logs") / "orchestrator.log"
    env = {
        "ORCH_API__KEYS": json.dumps(KEYS),
        "ORCH_API__ADMIN_KEY": ADMIN_KEY,
        # Entries of this session only: other tests share the Valkey server.
        "ORCH_REDIS__KEY_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}",
    }
    with OrchestratorProcess(triton.grpc_url, valkey.url, env=env, log_path=log_path) as server:
        yield server


@pytest.fixture(scope="session")
def admin_headers() -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="session")
def acme(orchestrator: OrchestratorProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{orchestrator.http_url}/v1", api_key="sk-e2e-acme", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def beta(orchestrator: OrchestratorProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{orchestrator.http_url}/v1", api_key="sk-e2e-beta", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def gamma(orchestrator: OrchestratorProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{orchestrator.http_url}/v1", api_key="sk-e2e-gamma", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def grpc_channel(orchestrator: OrchestratorProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(orchestrator.grpc_target) as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(grpc_channel: grpc.Channel) -> pb_grpc.OrchestratorStub:
    return pb_grpc.OrchestratorStub(grpc_channel)
