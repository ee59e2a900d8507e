"""With Triton unreachable the orchestrator still starts, says it is not ready, and answers generation
requests with 503 / UNAVAILABLE quickly (connection retries are bounded), never a hang or a 500."""

from __future__ import annotations

import time
import uuid

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from orchestrator.config import ModelSettings
from stack.orchestrator_process import OrchestratorProcess
from stack.ports import free_port
from stack.valkey import ValkeyServer

pytestmark = pytest.mark.integration
MODEL = ModelSettings().name


def test_triton_down(valkey: ValkeyServer, tmp_path) -> None:
    env = {"ORCH_REDIS__KEY_PREFIX": f"down-{uuid.uuid4().hex[:8]}", "ORCH_API__HEALTH_INTERVAL_S": "0.5"}
    with OrchestratorProcess(f"127.0.0.1:{free_port()}", valkey.url, env=env, wait_for="/healthz",
                             log_path=tmp_path / "orchestrator.log") as orchestrator:
        ready = httpx.get(f"{orchestrator.http_url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"] == {"triton": False, "redis": True}

        started = time.perf_counter()
        response = httpx.post(f"{orchestrator.http_url}/v1/chat/completions", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "Is anyone there?"}]})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "service_unavailable"
        assert time.perf_counter() - started < 5

        with grpc.insecure_channel(orchestrator.grpc_target) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                pb_grpc.OrchestratorStub(channel).Generate(pb.GenerateRequest(model=MODEL, prompt="Hello?"),
                                                           timeout=30)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
