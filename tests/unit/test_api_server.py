"""Both APIs served for real (uvicorn + grpc.aio on loopback ports) around a fake service: a client that goes
away mid-stream closes the service's stream (which cancels the backend request) on either API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from orchestrator.api.server import ApiServers
from orchestrator.config import Settings
from orchestrator.api.settings import ApiSettings
from tests.unit.api_fake_service import FakeService

LONG_ANSWER = " ".join(f"w{i}" for i in range(200))


@pytest.fixture
async def served() -> AsyncIterator[tuple[ApiServers, FakeService]]:
    service = FakeService(stall_s=30)
    servers = ApiServers(service, Settings(api=ApiSettings(http_port=0, grpc_port=0)))
    await servers.start()
    yield servers, service
    await servers.stop(0)


async def test_http_client_disconnect_closes_the_service_stream(served: tuple[ApiServers, FakeService]) -> None:
    servers, service = served
    body = {"model": Settings().model.name, "messages": [{"role": "user", "content": LONG_ANSWER}], "stream": True}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{servers.http_port}") as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
    # Closed at once, not when the stalled backend produces its next chunk 30 s later.
    await asyncio.wait_for(service.stream_closed.wait(), timeout=2)
    assert service.streams_closed == 1


async def test_grpc_cancel_closes_the_service_stream(served: tuple[ApiServers, FakeService]) -> None:
    servers, service = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        call = pb_grpc.OrchestratorStub(channel).GenerateStream(pb.GenerateRequest(
            model=Settings().model.name, messages=[pb.ChatMessage(role="user", content=LONG_ANSWER)]))
        assert (await call.read()).text == "echo:"
        call.cancel()
        await asyncio.wait_for(service.stream_closed.wait(), timeout=2)
    assert service.streams_closed == 1


async def test_both_apis_answer_on_their_ports(served: tuple[ApiServers, FakeService]) -> None:
    servers, _ = served
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{servers.http_port}") as client:
        assert (await client.get("/healthz")).status_code == 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{servers.grpc_port}") as channel:
        response = await pb_grpc.OrchestratorStub(channel).Generate(
            pb.GenerateRequest(model=Settings().model.name, prompt="hi"))
        assert response.text == "echo: hi"
