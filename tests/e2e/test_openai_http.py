"""The HTTP API through the official openai SDK against the real stack (Triton on the CPU profile, Valkey):
miss, exact and semantic answers streamed and not, tenants, cache controls, errors, embeddings, admin."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from orchestrator.config import ModelSettings
from stack.orchestrator_process import OrchestratorProcess

pytestmark = pytest.mark.integration
MODEL = ModelSettings().name
MAX_TOKENS = 24


def ask(client: openai.OpenAI, question: str, **options):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=MAX_TOKENS, **options)
    return raw.headers, raw.parse()


def ask_streaming(client: openai.OpenAI, question: str, **options):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=MAX_TOKENS, stream=True,
        stream_options={"include_usage": True}, **options)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return raw.headers, chunks, text


def test_miss_exact_semantic(acme: openai.OpenAI) -> None:
    headers, first = ask(acme, "What is the capital of France?")
    answer = first.choices[0].message.content
    assert headers["x-cache"] == "miss" and first.model_extra["cache"]["layer"] == "miss"
    assert answer and first.usage.completion_tokens > 0 and first.usage.prompt_tokens > 0
    assert type(first.model_extra["cache"]["kv_cache_reused_blocks"]) is int  # as the engine reported it

    headers, again = ask(acme, "What is the capital of France?")
    assert headers["x-cache"] == "exact" and again.choices[0].message.content == answer
    assert again.model_extra["cache"]["tokens_saved"] > 0

    headers, paraphrase = ask(acme, "What's the capital city of France?")
    assert headers["x-cache"] == "semantic", paraphrase.choices[0].message.content
    assert 0.5 < float(headers["x-cache-similarity"]) < 1.0
    assert paraphrase.choices[0].message.content == answer

    headers, near_miss = ask(acme, "What is the capital of Germany?")
    assert headers["x-cache"] == "miss"


def test_streamed_miss_exact_semantic(acme: openai.OpenAI) -> None:
    headers, chunks, answer = ask_streaming(acme, "How many legs does a spider have?")
    assert headers["x-cache"] == "miss" and chunks[0].model_extra["cache"]["layer"] == "miss"
    assert answer and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")

    headers, chunks, text = ask_streaming(acme, "How many legs does a spider have?")
    assert headers["x-cache"] == "exact" and text == answer
    headers, chunks, text = ask_streaming(acme, "How many legs do spiders have?")
    assert headers["x-cache"] == "semantic" and text == answer
    assert chunks[0].model_extra["cache"]["similarity"] == pytest.approx(float(headers["x-cache-similarity"]),
                                                                         abs=1e-4)


def test_tenants_do_not_share_answers(acme: openai.OpenAI, beta: openai.OpenAI) -> None:
    question = "Which planet is known as the Red Planet?"
    assert ask(acme, question)[0]["x-cache"] == "miss"
    assert ask(acme, question)[0]["x-cache"] == "exact"
    assert ask(beta, question)[0]["x-cache"] == "miss"
    assert ask(beta, "Which planet is called the Red Planet?")[0]["x-cache"] == "semantic"


def test_cache_controls(acme: openai.OpenAI) -> None:
    question = "Name a primary color."
    assert ask(acme, question, extra_headers={"Cache-Control": "no-store"})[0]["x-cache"] == "miss"
    assert ask(acme, question)[0]["x-cache"] == "miss"  # nothing was stored the first time
    assert ask(acme, question)[0]["x-cache"] == "exact"
    assert ask(acme, question, extra_headers={"Cache-Control": "no-cache"})[0]["x-cache"] == "miss"
    assert ask(acme, question, extra_body={"cache": {"no_cache": True}})[0]["x-cache"] == "miss"


def test_completions(acme: openai.OpenAI) -> None:
    first = acme.completions.with_raw_response.create(model=MODEL, prompt="The sky is", max_tokens=8)
    assert first.headers["x-cache"] == "miss" and first.parse().choices[0].text
    stream = acme.completions.with_raw_response.create(model=MODEL, prompt="The sky is", max_tokens=8, stream=True)
    assert stream.headers["x-cache"] == "exact"
    text = "".join(c.choices[0].text for c in stream.parse() if c.choices)
    assert text == first.parse().choices[0].text


def test_errors_name_the_field(acme: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        acme.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.param == "model"
    with pytest.raises(openai.BadRequestError) as raised:
        acme.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=5)
    assert raised.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as raised:
        acme.chat.completions.create(model=MODEL, messages=[])
    assert raised.value.param == "messages"
    # The SDK writes strict JSON; Python's json reads NaN, as the server does.
    nan = httpx.post(f"{acme.base_url}chat/completions", headers={"authorization": f"Bearer {acme.api_key}",
                                                                 "content-type": "application/json"},
                     content=f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], '
                             f'"temperature": NaN}}', timeout=30)
    assert nan.status_code == 400 and nan.json()["error"]["param"] == "temperature"
    assert nan.json()["error"]["message"].endswith("got NaN")
    bad_key = openai.OpenAI(base_url=str(acme.base_url), api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()


WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.mark.parametrize(("options", "param"), [
    ({"tools": [WEATHER_TOOL]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "Weather in Paris?"},
                   {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                                                                        "function": {"name": "weather",
                                                                                     "arguments": "{}"}}]}]},
     "messages[1].tool_calls"),
    ({"messages": [{"role": "user", "content": "Weather in Paris?", "name": "ann"}]}, "messages[0].name"),
])
def test_what_the_model_would_never_see_is_refused(acme: openai.OpenAI, options: dict, param: str) -> None:
    """Tools, tool calls, structured output and message names would be hashed into the cache key but never
    reach the model, so an answer would silently ignore them: refused, naming the field."""
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 8,
               **options}
    with pytest.raises(openai.BadRequestError) as raised:
        acme.chat.completions.create(**request)
    assert raised.value.status_code == 400 and raised.value.param == param
    assert f"{param}: not supported" in raised.value.message


def test_embeddings(acme: openai.OpenAI) -> None:
    texts = ["How do I reset my password?", "How can I change my password?", "The cat sat on the mat."]
    result = acme.embeddings.create(model="embedding", input=texts)
    vectors = np.array([d.embedding for d in result.data])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    assert vectors[0] @ vectors[1] > 0.7 > vectors[0] @ vectors[2]
    assert result.usage.prompt_tokens > len(texts)
    floats = acme.embeddings.create(model="embedding", input=texts[0], encoding_format="float")
    assert np.allclose(floats.data[0].embedding, vectors[0], atol=1e-6)


def test_models(acme: openai.OpenAI) -> None:
    assert {m.id for m in acme.models.list()} == {MODEL, "embedding"}


def test_admin_invalidation(gamma: openai.OpenAI, orchestrator: OrchestratorProcess,
                           admin_headers: dict[str, str]) -> None:
    question = "What is the boiling point of water at sea level?"
    ask(gamma, question)
    assert ask(gamma, question)[0]["x-cache"] == "exact"
    admin = httpx.Client(base_url=orchestrator.http_url, headers=admin_headers)
    forbidden = httpx.post(f"{orchestrator.http_url}/admin/invalidate", json={"tenant": "gamma"},
                           headers={"authorization": "Bearer sk-e2e-gamma"})
    assert forbidden.status_code == 403
    stats = admin.get("/admin/stats", params={"tenant": "gamma"})
    assert stats.status_code == 200, stats.text
    removed = admin.post("/admin/invalidate", json={"tenant": "gamma"})
    assert removed.status_code == 200 and removed.json()["removed"] >= 1
    assert ask(gamma, question)[0]["x-cache"] == "miss"


def test_probes_and_metrics(acme: openai.OpenAI, orchestrator: OrchestratorProcess) -> None:
    ask(acme, "What is the capital of France?")
    assert httpx.get(f"{orchestrator.http_url}/healthz").status_code == 200
    ready = httpx.get(f"{orchestrator.http_url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"triton": True, "redis": True}
    metrics = httpx.get(f"{orchestrator.http_url}/metrics").text
    assert 'orchestrator_api_requests_total{api="http",endpoint="chat_completions",layer="exact",status="200"}' \
        in metrics
    assert "orchestrator_cache_hits_total" in metrics and "orchestrator_backend_ttft_seconds_count" in metrics
