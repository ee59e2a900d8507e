"""The gRPC service in front of a fake service, through the generated stubs on a loopback port: translation,
cache metadata, status codes, auth, health and reflection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from orchestrator.api.auth import Authenticator
from orchestrator.api.context import ServedModels
from orchestrator.api.grpc_server import SERVICE_NAME, GrpcServer
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from orchestrator.api.settings import KeyGrant
from orchestrator.errors import BackendTimeout, BackendUnavailable, InvalidRequest, Overloaded
from orchestrator.schemas import SamplingParams
from tests.chats import MODEL, grpc_chat
from tests.unit.api_fake_service import FakeService

AUTH = Authenticator({"sk-acme": KeyGrant(tenant="acme", namespace="support")}, "sk-admin", open_mode=False)
ACME = (("authorization", "Bearer sk-acme"),)
ADMIN = (("authorization", "Bearer sk-admin"),)


class Harness:
    def __init__(self) -> None:
        self.service = FakeService()
        self.server = GrpcServer(self.service, AUTH, ServedModels((MODEL,), "embedding"), "127.0.0.1", 0,
                                 health_interval_s=0.05)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.stub = pb_grpc.OrchestratorStub(self.channel)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.server.start()
    yield harness
    await harness.channel.close()
    await harness.server.stop(0)


chat = grpc_chat


async def test_generate_translates_and_reports_the_cache(harness: Harness) -> None:
    harness.service.layer, harness.service.similarity = "semantic", 0.91
    request = chat(params=pb.SamplingParams(max_tokens=12, temperature=0.5, seed=3, stop=["."]),
                   cache=pb.CacheControls(no_store=True, ttl_seconds=30))
    response = await harness.stub.Generate(request, metadata=ACME)
    assert response.text == "echo: hello there" and response.finish_reason == "stop"
    assert response.cache.layer == pb.CACHE_LAYER_SEMANTIC and response.cache.tokens_saved == 12
    assert response.cache.similarity == pytest.approx(0.91)
    assert response.usage.total_tokens == 7 + 3
    generation, controls = harness.service.calls[0]
    assert generation.tenant == "acme" and generation.model == MODEL
    assert generation.params == SamplingParams(max_tokens=12, temperature=0.5, seed=3, stop=(".",))
    assert (controls.no_cache, controls.no_store, controls.ttl_s, controls.namespace) == (False, True, 30, "support")


async def test_generate_defaults_and_plain_prompts(harness: Harness) -> None:
    response = await harness.stub.Generate(pb.GenerateRequest(model=MODEL, prompt="Once"), metadata=ACME)
    assert response.text == "echo: Once" and response.cache.layer == pb.CACHE_LAYER_MISS
    assert not response.cache.HasField("similarity") and response.kv_cache_reused_blocks == 3
    generation, _ = harness.service.calls[0]
    assert generation.prompt == "Once" and generation.params == SamplingParams()


async def test_stream_carries_cache_first_and_usage_last(harness: Harness) -> None:
    harness.service.layer = "exact"
    messages = [m async for m in harness.stub.GenerateStream(chat("a b c"), metadata=ACME)]
    assert "".join(m.text for m in messages) == "echo: a b c"
    assert messages[0].cache.layer == pb.CACHE_LAYER_EXACT
    assert not any(m.HasField("cache") for m in messages[1:])
    assert messages[-1].finish_reason == "stop" and messages[-1].usage.completion_tokens == 4
    assert harness.service.streams_closed == 1


@pytest.mark.parametrize(("error", "code"), [
    (InvalidRequest("max_tokens", "too large"), grpc.StatusCode.INVALID_ARGUMENT),
    (Overloaded("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BackendUnavailable("triton down"), grpc.StatusCode.UNAVAILABLE),
    (BackendTimeout("slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
    (RuntimeError("secret internals"), grpc.StatusCode.INTERNAL),
])
async def test_errors_become_status_codes(harness: Harness, error: Exception, code: grpc.StatusCode) -> None:
    harness.service.error = error
    for call in (harness.stub.Generate(chat(), metadata=ACME),
                 harness.stub.GenerateStream(chat(), metadata=ACME).read()):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == code
        assert "secret" not in raised.value.details()


async def test_a_stream_that_fails_midway_is_aborted_with_the_code(harness: Harness) -> None:
    harness.service.fail_after_chunks = BackendUnavailable("triton went away")
    call = harness.stub.GenerateStream(chat("a b c d"), metadata=ACME)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in call:
            received.append(message.text)
    assert received == ["echo:", " a"]
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and raised.value.details() == "triton went away"
    assert harness.service.streams_closed == 1


@pytest.mark.parametrize(("request_", "field"), [
    (pb.GenerateRequest(model=MODEL), "messages"),
    (pb.GenerateRequest(model=MODEL, prompt="x", messages=[pb.ChatMessage(role="user", content="y")]), "prompt"),
    (pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(role="user", content="y", name="ann")]),
     "messages[0].name"),
    (pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(role="wizard", content="y")]), "messages[0].role"),
])
async def test_bad_requests_name_the_field(harness: Harness, request_: pb.GenerateRequest, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.Generate(request_, metadata=ACME)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(field + ":")


async def test_auth(harness: Harness) -> None:
    for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                           ((("authorization", "Bearer nope"),), grpc.StatusCode.UNAUTHENTICATED),
                           ((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await harness.stub.Generate(chat(), metadata=metadata)
        assert raised.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.stub.Invalidate(pb.InvalidateRequest(tenant="acme"), metadata=ACME)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await harness.stub.Invalidate(pb.InvalidateRequest(tenant="acme"), metadata=ADMIN)).removed == 4
    assert harness.service.invalidations == [{"tenant": "acme", "key": None, "namespace": None}]
    stats = await harness.stub.CacheStats(pb.CacheStatsRequest(tenant="acme"), metadata=ADMIN)
    assert json_format.MessageToDict(stats.stats)["hits"] == {"exact": 2, "semantic": 1}


async def test_embed(harness: Harness) -> None:
    response = await harness.stub.Embed(pb.EmbedRequest(texts=["ab", "abc"], model="embedding"), metadata=ACME)
    assert response.dimensions == 384 and response.model == "embedding"
    assert [e.values[len(t)] for e, t in zip(response.embeddings, ["ab", "abc"])] == [1.0, 1.0]
    for request_, field in ((pb.EmbedRequest(texts=[]), "input"), (pb.EmbedRequest(texts=["a"], model=MODEL), "model")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await harness.stub.Embed(request_, metadata=ACME)
        assert raised.value.details().startswith(field)


async def test_health_follows_readiness(harness: Harness) -> None:
    import asyncio

    health = health_pb2_grpc.HealthStub(harness.channel)
    for service in ("", SERVICE_NAME):
        status = (await health.Check(health_pb2.HealthCheckRequest(service=service))).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    harness.service.ready["redis"] = False
    await asyncio.sleep(0.3)
    status = (await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_and_describes_the_service(harness: Harness) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)

    async def ask(request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        return await stub.ServerReflectionInfo(iter([request])).read()

    listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    described = await ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME))
    assert described.file_descriptor_response.file_descriptor_proto
