"""The LLM through the ensemble on the real Triton: streaming, prefix reuse, cancellation, clear errors."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import pytest
import tritonclient.grpc.aio as grpcaio

from cpu_engine import tokenizer
from cpu_engine.client import generate, id_inputs, text_inputs
from model_assets.chat import format_chat
from stack.triton import TritonServer

QUESTION = format_chat([{"role": "user", "content": "What is the capital of France?"}])


@pytest.fixture
async def client(triton: TritonServer):
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    yield client
    await client.close()


def long_prefix(tokens: int) -> str:
    """A system prompt of about `tokens` tokens, unique per call so no earlier test has cached it."""
    sentence = f"Policy {uuid.uuid4().hex[:8]}: answer politely, cite the handbook, never guess numbers. "
    count = len(tokenizer.encode(tokenizer.load(), sentence))
    return sentence * (tokens // count)


def metric(triton: TritonServer, name: str, label: str) -> float:
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name) and label in line and 'model="tensorrt_llm"' in line:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{label}}} not exported")


async def test_streaming_and_non_streaming_give_the_same_greedy_text(client) -> None:
    whole = await generate(client, "ensemble", text_inputs(QUESTION, 24, stream=False, temperature=0.0))
    streamed = await generate(client, "ensemble", text_inputs(QUESTION, 24, stream=True, temperature=0.0))
    assert whole.error is None and streamed.error is None
    assert whole.text.strip()
    assert streamed.responses > 3
    assert streamed.text == whole.text


async def test_stream_deltas_never_split_a_character(client) -> None:
    prompt = format_chat([{"role": "user", "content": "Write the word 'café' and three emoji like 🐦🚀🎉, ten times."}])
    streamed = await generate(client, "ensemble", text_inputs(prompt, 60, stream=True, temperature=0.0))
    assert streamed.error is None
    assert all("\ufffd" not in delta for delta in streamed.texts)
    assert any(ord(ch) > 127 for ch in streamed.text)


async def test_stop_words_end_the_text(client) -> None:
    prompt = format_chat([{"role": "user", "content": "Count from 1 to 20, separated by commas."}])
    free = await generate(client, "ensemble", text_inputs(prompt, 60, stream=False, temperature=0.0))
    stopped = await generate(client, "ensemble", text_inputs(prompt, 60, stream=False, temperature=0.0,
                                                             stop_words=["5"]))
    assert stopped.error is None and "5" in free.text
    assert stopped.text.endswith("5") and len(stopped.text) < len(free.text)
    assert free.text.startswith(stopped.text)


async def test_second_request_sharing_a_long_prefix_reuses_blocks_with_identical_output(client) -> None:
    system = long_prefix(600)

    def prompt(question: str) -> str:
        return format_chat([{"role": "system", "content": system}, {"role": "user", "content": question}])

    first = await generate(client, "ensemble", text_inputs(prompt("Who are you?"), 16, stream=True, temperature=0.0))
    second = await generate(client, "ensemble", text_inputs(prompt("What do you do?"), 16, stream=True,
                                                            temperature=0.0))
    assert first.error is None and second.error is None
    assert first.outputs["kv_cache_reused_blocks"] == 0
    assert second.outputs["kv_cache_reused_blocks"] >= 500 // 32
    assert second.outputs["kv_cache_alloc_total_blocks"] > second.outputs["kv_cache_reused_blocks"]
    assert second.ttft_s < first.ttft_s / 3
    again = await generate(client, "ensemble", text_inputs(prompt("Who are you?"), 16, stream=True,
                                                           temperature=0.0))
    assert again.outputs["kv_cache_reused_blocks"] > 0 and again.text == first.text


LONG_STORY = format_chat([{"role": "user", "content": "Write a very long story about a lighthouse."}])


async def assert_cancel_frees_the_engine(client, triton: TritonServer, model: str, inputs) -> None:
    """Cancel a streaming generation after three responses; the engine must drop it within 5 s."""
    three = asyncio.Event()

    async def count(generation):
        if generation.responses >= 3:
            three.set()

    task = asyncio.ensure_future(generate(client, model, inputs, on_response=count))
    await asyncio.wait_for(three.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while metric(triton, "nv_trt_llm_request_metrics", 'request_type="active"') > 0:
        assert time.monotonic() < deadline, "the engine kept generating after the client went away"
        await asyncio.sleep(0.1)


async def test_cancelled_stream_stops_its_generation(client, triton: TritonServer) -> None:
    """Directly on tensorrt_llm (Triton 2.51 does not pass an ensemble's cancellation on; the BLS does)."""
    inputs = id_inputs(tokenizer.encode(tokenizer.load(), LONG_STORY), 2000, streaming=True)
    await assert_cancel_frees_the_engine(client, triton, "tensorrt_llm", inputs)


async def test_over_long_prompt_is_refused_with_a_clear_error(client) -> None:
    result = await generate(client, "ensemble", text_inputs(long_prefix(5000), 8, stream=False))
    assert result.error is not None
    assert "input_ids: the prompt has" in str(result.error) and "context" in str(result.error)


async def test_bad_sampling_value_names_the_input(client) -> None:
    result = await generate(client, "ensemble", text_inputs(QUESTION, 8, stream=False, top_p=1.5))
    assert result.error is not None and "runtime_top_p" in str(result.error)


def test_kv_block_metrics_are_exported(triton: TritonServer) -> None:
    assert metric(triton, "nv_trt_llm_kv_cache_block_metrics", 'kv_cache_block_type="max"') == 4 * (4096 // 32)
    assert metric(triton, "nv_trt_llm_kv_cache_block_metrics", 'kv_cache_block_type="tokens_per"') == 32
