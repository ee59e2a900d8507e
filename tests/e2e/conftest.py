"""The orchestrator as users run it (`python -m orchestrator serve`, a child process) on free loopback ports,
in front of the session's real Triton and Valkey, with three tenants and an admin key (tests/orchestrators.py)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import openai
import pytest

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from stack.orchestrator_process import OrchestratorProcess
from tests.orchestrators import orchestrator_fixture

KEYS = {"sk-e2e-acme": {"tenant": "acme"}, "sk-e2e-beta": {"tenant": "beta"}, "sk-e2e-gamma": {"tenant": "gamma"}}
ADMIN_KEY = "sk-e2e-admin"

orchestrator = orchestrator_fixture("e2e", KEYS, ADMIN_KEY)


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
