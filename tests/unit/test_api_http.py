"""The OpenAI-compatible HTTP API in front of a fake service: wire format (checked with the official openai SDK),
translation into service requests, cache headers and controls, errors, auth, and stream cancellation."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import openai
import pytest

from orchestrator.api.auth import Authenticator
from orchestrator.api.context import ServedModels
from orchestrator.api.http import create_app
from orchestrator.api.settings import KeyGrant
from orchestrator.errors import (
    BackendTimeout,
    BackendUnavailable,
    InvalidRequest,
    Overloaded,
)
from tests.unit.api_fake_service import FakeService

MODEL = "SmolLM2-135M-Instruct"
MODELS = ServedModels(generation=(MODEL,), embedding="embedding")
OPEN = Authenticator({}, None, open_mode=True, open_tenant="local")
KEYED = Authenticator({"sk-acme": KeyGrant(tenant="acme", namespace="support", namespaces=("sales",))},
                      "sk-admin", open_mode=False)


def http_client(service: FakeService, auth: Authenticator = OPEN) -> httpx.AsyncClient:
    app = create_app(service, auth, MODELS)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test")


def sdk(service: FakeService, auth: Authenticator = OPEN, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://test/v1", api_key=api_key, http_client=http_client(service, auth),
                              max_retries=0)


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}]}


def sse_payloads(text: str) -> list:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


async def test_chat_completion_through_the_sdk_reports_the_cache_layer() -> None:
    service = FakeService(layer="semantic", similarity=0.9312)
    raw = await sdk(service).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
        max_tokens=20, temperature=0.0, top_p=0.9, seed=7, stop=["\n"])
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: Hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 7 and completion.usage.total_tokens == 7 + 3
    assert raw.headers["x-cache"] == "semantic" and raw.headers["x-cache-similarity"] == "0.9312"
    assert completion.model_extra["cache"] == {"layer": "semantic", "key": "k" * 64, "similarity": 0.9312,
                                               "tokens_saved": 12}
    request, controls = service.calls[0]
    assert request.tenant == "local" and request.model == MODEL and request.prompt is None
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief."), ("user", "Hi there")]
    params = request.params
    assert (params.max_tokens, params.temperature, params.top_p, params.seed, params.stop) == (20, 0.0, 0.9, 7, ("\n",))
    assert not controls.no_cache and not controls.no_store


async def test_unset_sampling_fields_keep_the_service_defaults() -> None:
    service = FakeService()
    async with http_client(service) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    from orchestrator.schemas import SamplingParams
    assert service.calls[0][0].params == SamplingParams()


async def test_miss_has_no_similarity_header_and_reports_kv_reuse() -> None:
    async with http_client(FakeService(layer="miss")) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.headers["x-cache"] == "miss" and "x-cache-similarity" not in response.headers
    assert response.json()["cache"]["kv_cache_reused_blocks"] == 3


async def test_chat_stream_through_the_sdk_with_usage() -> None:
    service = FakeService(layer="exact")
    stream = await sdk(service).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["cache"]["layer"] == "exact"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert service.streams_closed == 1


async def test_stream_framing_headers_and_usage_only_when_asked() -> None:
    async with http_client(FakeService(layer="exact")) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-cache"] == "exact"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert not any("usage" in c for c in chunks)


async def test_completions_plain_and_streamed() -> None:
    service = FakeService()
    client = sdk(service)
    completion = await client.completions.create(model=MODEL, prompt="Once upon", max_tokens=5)
    assert completion.choices[0].text == "echo: Once upon" and completion.object == "text_completion"
    assert service.calls[0][0].prompt == "Once upon" and service.calls[0][0].messages == ()
    stream = await client.completions.create(model=MODEL, prompt="Once upon", stream=True,
                                             stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: Once upon"
    assert chunks[-1].usage.total_tokens == 7 + 3


@pytest.mark.parametrize(("header", "body_cache", "expected"), [
    ("no-cache", None, (True, False, None)),
    ("no-store, no-cache", None, (True, True, None)),
    (None, {"no_store": True, "ttl": 60}, (False, True, 60)),
])
async def test_cache_controls_from_header_and_body(header, body_cache, expected) -> None:
    service = FakeService()
    body = {**CHAT, **({"cache": body_cache} if body_cache else {})}
    async with http_client(service) as client:
        response = await client.post("/v1/chat/completions", json=body,
                                     headers={"cache-control": header} if header else {})
    assert response.status_code == 200
    controls = service.calls[0][1]
    assert (controls.no_cache, controls.no_store, controls.ttl_s) == expected


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL}, "messages"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({**CHAT, "temperature": 3}, "temperature"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "n": 2}, "n"),
    ({**CHAT, "presence_penalty": 0.5}, "presence_penalty"),
    ({**CHAT, "cache": {"no_cahce": True}}, "cache.no_cahce"),
    ({**CHAT, "cache": {"ttl": -1}}, "ttl"),
    ({**CHAT, "temperature": "hot"}, "temperature"),
    ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({**CHAT, "response_format": {"type": "json_object"}}, "response_format"),
    ({**CHAT, "messages": [{"role": "user", "content": "x", "name": "ann"}]}, "messages[0].name"),
    ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
])
async def test_bad_bodies_are_400_naming_the_field(body, param) -> None:
    service = FakeService()
    async with http_client(service) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"].startswith(param)
    assert service.calls == []


async def test_malformed_json_is_400() -> None:
    async with http_client(FakeService()) as client:
        response = await client.post("/v1/chat/completions", content=b"{not json",
                                     headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "request body is not valid JSON"


@pytest.mark.parametrize(("error", "status", "error_type"), [
    (InvalidRequest("max_tokens", "exceeds 4096"), 400, "invalid_request_error"),
    (Overloaded("queue full"), 429, "rate_limit_error"),
    (BackendUnavailable("triton unreachable"), 503, "service_unavailable"),
    (BackendTimeout("no first token in 60 s"), 504, "timeout"),
])
@pytest.mark.parametrize("stream", [False, True])
async def test_service_errors_map_to_status(error, status, error_type, stream) -> None:
    async with http_client(FakeService(error=error)) as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert response.status_code == status
    body = response.json()["error"]
    assert body["type"] == error_type and body["message"] == error.message
    assert body["code"] == error.grpc_code.lower()
    if isinstance(error, InvalidRequest):
        assert body["param"] == "max_tokens"


async def test_unexpected_errors_are_a_generic_500(caplog: pytest.LogCaptureFixture) -> None:
    async with http_client(FakeService(error=RuntimeError("secret internals"))) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 500
    assert "secret" not in response.text and response.json()["error"]["type"] == "server_error"
    assert "secret internals" in caplog.text


async def test_a_stream_that_fails_midway_ends_with_an_error_event() -> None:
    service = FakeService(fail_after_chunks=BackendUnavailable("triton went away"))
    async with http_client(service) as client:
        response = await client.post("/v1/chat/completions",
                                     json={**CHAT, "messages": [{"role": "user", "content": "a b c d"}],
                                           "stream": True})
    payloads = sse_payloads(response.text)
    assert "[DONE]" not in payloads
    assert json.loads(payloads[-1])["error"]["message"] == "triton went away"
    assert service.streams_closed == 1
    stream = await sdk(service).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a b c d"}], stream=True)
    with pytest.raises(openai.APIError, match="triton went away"):
        async for _ in stream:
            pass


async def test_embeddings_float_and_base64() -> None:
    service = FakeService()
    result = await sdk(service).embeddings.create(model="embedding", input=["ab", "abc"])  # SDK asks for base64
    assert [len(d.embedding) for d in result.data] == [384, 384]
    assert result.data[1].embedding[3] == 1.0 and result.usage.prompt_tokens > 0
    async with http_client(service) as client:
        response = await client.post("/v1/embeddings", json={"model": "embedding", "input": "ab",
                                                              "encoding_format": "float"})
        assert response.json()["data"][0]["embedding"][2] == 1.0
        packed = (await client.post("/v1/embeddings", json={"model": "embedding", "input": "ab",
                                                            "encoding_format": "base64"})).json()
        vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
        assert vector.shape == (384,) and vector[2] == 1.0
        wrong = await client.post("/v1/embeddings", json={"model": MODEL, "input": "ab"})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "model"
        dims = await client.post("/v1/embeddings", json={"model": "embedding", "input": "ab", "dimensions": 64})
        assert dims.status_code == 400 and dims.json()["error"]["param"] == "dimensions"


async def test_models_health_readiness_metrics_and_unknown_routes() -> None:
    service = FakeService()
    models = await sdk(service).models.list()
    assert [m.id for m in models.data] == [MODEL, "embedding"]
    async with http_client(service) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        service.ready["triton"] = False
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["checks"] == {"triton": False, "redis": True}
        await client.post("/v1/chat/completions", json=CHAT)
        metrics = (await client.get("/metrics")).text
        assert 'orchestrator_api_requests_total{api="http",endpoint="chat_completions",layer="miss",status="200"}' \
            in metrics
        missing = await client.get("/v1/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        assert (await client.get("/v1/models/nope")).status_code == 404


async def test_keys_map_to_tenants_and_namespaces() -> None:
    service = FakeService()
    async with http_client(service, KEYED) as client:
        missing = await client.post("/v1/chat/completions", json=CHAT)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["type"] == "authentication_error"
        wrong = await client.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-acm"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid API key"
        acme = {"authorization": "Bearer sk-acme"}
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=acme)).status_code == 200
        assert (await client.post("/v1/chat/completions", json={**CHAT, "cache": {"namespace": "sales"}},
                                  headers={"x-api-key": "sk-acme"})).status_code == 200
        other = await client.post("/v1/chat/completions", json={**CHAT, "cache": {"namespace": "hr"}}, headers=acme)
        assert other.status_code == 403 and other.json()["error"]["type"] == "permission_error"
        assert [(r.tenant, c.namespace) for r, c in service.calls] == [("acme", "support"), ("acme", "sales")]
        assert (await client.get("/admin/stats", headers=acme)).status_code == 403
        admin = {"authorization": "Bearer sk-admin"}
        assert (await client.get("/admin/stats", params={"tenant": "acme"}, headers=admin)).json()["tenant"] == "acme"
        invalidated = await client.post("/admin/invalidate", json={"tenant": "acme"}, headers=admin)
        assert invalidated.json() == {"removed": 4}
        assert service.invalidations == [{"tenant": "acme", "key": None, "namespace": None}]
        assert (await client.get("/healthz")).status_code == 200  # probes need no key


async def test_sdk_surfaces_auth_errors() -> None:
    with pytest.raises(openai.AuthenticationError):
        await sdk(FakeService(), KEYED, api_key="sk-wrong").chat.completions.create(**CHAT)
