"""The gRPC API through the generated stubs against the real stack: the three cache layers unary and streamed,
answers shared with the HTTP API, health and reflection, errors."""

from __future__ import annotations

import functools

import grpc
import openai
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.chats import MODEL, grpc_chat

pytestmark = pytest.mark.integration
ACME = (("authorization", "Bearer sk-e2e-acme"),)
PARAMS = pb.SamplingParams(max_tokens=24)


chat = functools.partial(grpc_chat, params=PARAMS)


def test_generate_miss_exact_semantic(stub: pb_grpc.OrchestratorStub) -> None:
    first = stub.Generate(chat("What is the largest ocean on Earth?"), metadata=ACME, timeout=120)
    assert first.cache.layer == pb.CACHE_LAYER_MISS and first.text and first.usage.completion_tokens > 0
    again = stub.Generate(chat("What is the largest ocean on Earth?"), metadata=ACME, timeout=30)
    assert again.cache.layer == pb.CACHE_LAYER_EXACT and again.text == first.text
    assert again.cache.key == first.cache.key and again.cache.tokens_saved > 0
    paraphrase = stub.Generate(chat("Which ocean is the largest on Earth?"), metadata=ACME, timeout=30)
    assert paraphrase.cache.layer == pb.CACHE_LAYER_SEMANTIC and paraphrase.text == first.text
    assert 0.5 < paraphrase.cache.similarity < 1.0


def test_stream_miss_exact_semantic(stub: pb_grpc.OrchestratorStub) -> None:
    def streamed(question: str) -> tuple[list[pb.GenerateStreamResponse], str]:
        messages = list(stub.GenerateStream(chat(question), metadata=ACME, timeout=120))
        return messages, "".join(m.text for m in messages)

    messages, answer = streamed("Who wrote Romeo and Juliet?")
    assert messages[0].cache.layer == pb.CACHE_LAYER_MISS and answer
    assert messages[-1].finish_reason in ("stop", "length") and messages[-1].usage.completion_tokens > 0
    messages, text = streamed("Who wrote Romeo and Juliet?")
    assert messages[0].cache.layer == pb.CACHE_LAYER_EXACT and text == answer
    messages, text = streamed("Who is the author of Romeo and Juliet?")
    assert messages[0].cache.layer == pb.CACHE_LAYER_SEMANTIC and text == answer


def test_an_answer_cached_over_http_is_an_exact_hit_over_grpc(acme: openai.OpenAI,
                                                               stub: pb_grpc.OrchestratorStub) -> None:
    question = "What gas do plants absorb from the air?"
    acme.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=24)
    assert stub.Generate(chat(question), metadata=ACME, timeout=30).cache.layer == pb.CACHE_LAYER_EXACT


def test_errors(stub: pb_grpc.OrchestratorStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Generate(pb.GenerateRequest(model="nope", prompt="hi"), metadata=ACME, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and raised.value.details().startswith("model")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Generate(chat("hi"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as raised:
        stub.CacheStats(pb.CacheStatsRequest(), metadata=ACME, timeout=10)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("request_", "field"), [
    (pb.GenerateRequest(model=MODEL, params=PARAMS), "messages"),
    (pb.GenerateRequest(model=MODEL, prompt="x", messages=[pb.ChatMessage(role="user", content="y")]), "prompt"),
    (pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(role="wizard", content="y")]), "messages[0].role"),
    (pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(role="user", content="y", name="ann")]),
     "messages[0].name"),
    (pb.GenerateRequest(model=MODEL, messages=[pb.ChatMessage(role="user", content="y")],
                        params=pb.SamplingParams(temperature=float("nan"))), "temperature"),
])
def test_bad_requests_are_refused_naming_the_field(stub: pb_grpc.OrchestratorStub, request_: pb.GenerateRequest,
                                                   field: str) -> None:
    for streaming in (False, True):
        with pytest.raises(grpc.RpcError) as raised:
            if streaming:
                list(stub.GenerateStream(request_, metadata=ACME, timeout=10))
            else:
                stub.Generate(request_, metadata=ACME, timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith(f"{field}: "), raised.value.details()
    if field == "temperature":
        assert raised.value.details().endswith("got NaN")


def test_embed(stub: pb_grpc.OrchestratorStub) -> None:
    response = stub.Embed(pb.EmbedRequest(texts=["hello world", "goodbye"]), metadata=ACME, timeout=30)
    assert response.dimensions == 384 and len(response.embeddings) == 2
    assert len(response.embeddings[0].values) == 384


def test_health_and_reflection(grpc_channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(grpc_channel)
    for service in ("", "orchestrator.v1.Orchestrator"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc_channel)
    listed = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert "orchestrator.v1.Orchestrator" in {s.name for s in listed.list_services_response.service}
    described = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="orchestrator.v1.Orchestrator")])))
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in described.file_descriptor_response.file_descriptor_proto]
    methods = {m.name for f in files for s in f.service if s.name == "Orchestrator" for m in s.method}
    assert methods == {"Generate", "GenerateStream", "Embed", "CacheStats", "Invalidate"}
