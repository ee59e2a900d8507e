"""The Triton LLM client against the real Triton ensemble: streaming, token counts, KV reuse, errors, cancel."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import pytest

from model_assets.chat import format_chat
from orchestrator import metrics
from orchestrator.backends.triton_llm import TritonLLM
from orchestrator.config import ModelSettings, TritonSettings
from orchestrator.errors import BackendUnavailable, InvalidRequest
from orchestrator.schemas import SamplingParams
from stack.ports import free_port

pytestmark = pytest.mark.integration

PROMPT = format_chat([{"role": "user", "content": "What is the capital of France?"}])


#: Both text-in/text-out models of the repository serve the same interface.
TEXT_MODELS = ("tensorrt_llm_bls", "ensemble")


@pytest.fixture(params=TEXT_MODELS)
async def llm(triton, request):
    client = TritonLLM(TritonSettings(url=triton.grpc_url, llm_model=request.param), ModelSettings())
    yield client
    await client.aclose()


async def collect(llm: TritonLLM, prompt: str, params: SamplingParams):
    return [delta async for delta in llm.stream(prompt, params, "test")]


async def test_streams_a_greedy_answer_with_counts(llm: TritonLLM) -> None:
    assert await llm.ready()
    deltas = await collect(llm, PROMPT, SamplingParams(max_tokens=24))
    text = "".join(d.text for d in deltas)
    assert text.strip()
    assert deltas[-1].final and not any(d.final for d in deltas[:-1])
    assert len([d for d in deltas if d.text]) > 3  # streamed, not one block
    assert deltas[-1].input_tokens and deltas[-1].input_tokens > 5
    assert 0 < sum(d.output_tokens or 0 for d in deltas) <= 24  # upstream counts the tokens of each response
    again = await collect(llm, PROMPT, SamplingParams(max_tokens=24))
    assert "".join(d.text for d in again) == text  # greedy is deterministic
    assert again[-1].kv_cache_reused_blocks is not None


async def test_max_tokens_cuts_the_answer(llm: TritonLLM) -> None:
    deltas = await collect(llm, PROMPT, SamplingParams(max_tokens=3))
    assert sum(d.output_tokens or 0 for d in deltas) == 3


def active_requests(triton) -> float:
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("nv_trt_llm_request_metrics{") and 'request_type="active"' in line:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("nv_trt_llm_request_metrics{request_type=active} missing")


async def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


def abandoned(outcome: str) -> float:
    return metrics.BACKEND_ABANDONED.labels(outcome)._value.get()


async def test_closing_the_stream_stops_the_request(llm: TritonLLM, triton) -> None:
    # ~2,000 tokens take 25 s or more here: the engine going idle within 10 s of closing means it was stopped.
    # Through both models: the stop goes to tensorrt_llm by request id, so it needs no cancellation to pass
    # through the ensemble (which Triton 2.51 does not do).
    assert await wait_for(lambda: active_requests(triton) == 0, 60)
    stopped_before, cancelled_before = abandoned("stopped"), abandoned("cancelled")
    prompt = format_chat([{"role": "user", "content": "Write a long story about a dragon."}])
    stream = llm.stream(prompt, SamplingParams(max_tokens=2000), f"stop-me-{uuid.uuid4().hex}")
    assert not (await anext(stream)).final
    try:
        assert await wait_for(lambda: active_requests(triton) == 1, 10)
        await stream.aclose()
        assert await wait_for(lambda: active_requests(triton) == 0, 10)
        assert await wait_for(lambda: abandoned("stopped") == stopped_before + 1, 10)
        assert abandoned("cancelled") == cancelled_before  # no gRPC cancellation was needed
    finally:  # leave an idle engine to the tests that follow
        await stream.aclose()
        await wait_for(lambda: active_requests(triton) == 0, 60)


async def test_a_prompt_longer_than_the_context_is_a_clear_error(llm: TritonLLM) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await collect(llm, "hello " * 20_000, SamplingParams(max_tokens=8))
    assert raised.value.field in ("messages", "max_tokens")


async def test_unreachable_triton_fails_fast() -> None:
    settings = TritonSettings(url=f"127.0.0.1:{free_port()}", connect_retries=2, retry_backoff_s=0.01)
    client = TritonLLM(settings, ModelSettings())
    started = time.perf_counter()
    with pytest.raises(BackendUnavailable):
        await collect(client, PROMPT, SamplingParams(max_tokens=8))
    assert time.perf_counter() - started < 5
    assert not await client.ready()
    await client.aclose()
