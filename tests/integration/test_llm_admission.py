"""tensorrt_llm parameters honoured on the real Triton: gpt_model_type admission, the bounded queue, reuse off.

Each test loads tensorrt_llm with a config override (explicit model control) and restores the rendered one.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import tritonclient.grpc.aio as grpcaio

from cpu_engine import tokenizer
from cpu_engine.client import config_override, generate, id_inputs
from model_assets.chat import format_chat
from stack.triton import TritonServer
from tests.engine_queue import full_queue, prompt_ids, request


@pytest.fixture
async def client(triton: TritonServer):
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    yield client
    await client.close()


def engine_config(client, **changes):
    return config_override(client, "tensorrt_llm", **changes)


async def long_then_short(client) -> tuple:
    """A long request, then a short one sent once the long one is generating."""
    started = asyncio.Event()

    async def on_first(generation):
        started.set()

    long = asyncio.ensure_future(generate(client, "tensorrt_llm", id_inputs(
        prompt_ids("Tell me a long story about the sea."), 80, streaming=True, temperature=0.0), on_response=on_first))
    await asyncio.wait_for(started.wait(), 60)
    short = await generate(client, "tensorrt_llm", id_inputs(prompt_ids("Say hi."), 4, streaming=True))
    return await long, short


async def test_inflight_admits_a_new_request_into_the_running_batch(client) -> None:
    long, short = await long_then_short(client)
    assert long.error is None and short.error is None
    assert short.outputs["first_token_time_ns"] < long.outputs["last_token_time_ns"]


async def test_v1_runs_a_batch_to_completion_before_admitting_the_next(client) -> None:
    async with engine_config(client, parameters={"gpt_model_type": "V1"}):
        long, short = await long_then_short(client)
    assert long.error is None and short.error is None
    assert short.outputs["first_scheduled_time_ns"] >= long.outputs["last_token_time_ns"]


async def test_full_queue_rejects_with_a_clear_error(client) -> None:
    async with full_queue(client) as queue:
        rejected = await generate(client, "tensorrt_llm", request(4))
        queue.release()
        waited = await asyncio.wait_for(queue.waiting, 120)
    assert rejected.error is not None
    assert "queue full" in str(rejected.error) and "max_queue_size=1" in str(rejected.error)
    assert waited.error is None, (waited.error.status(), waited.error.message())


async def test_greedy_output_is_identical_with_and_without_prefix_reuse(client) -> None:
    system = f"Handbook {uuid.uuid4().hex[:8]}: be concise, be kind, cite sources. " * 40

    def ids(question: str) -> list[int]:
        return tokenizer.encode(tokenizer.load(), format_chat(
            [{"role": "system", "content": system}, {"role": "user", "content": question}]))

    await generate(client, "tensorrt_llm", id_inputs(ids("Who wrote it?"), 4, streaming=False, temperature=0.0))
    reused = await generate(client, "tensorrt_llm", id_inputs(ids("What is it for?"), 24, streaming=False,
                                                              temperature=0.0, exclude_input_in_output=True))
    async with engine_config(client, parameters={"enable_kv_cache_reuse": False}):
        await generate(client, "tensorrt_llm", id_inputs(ids("Who wrote it?"), 4, streaming=False, temperature=0.0))
        cold = await generate(client, "tensorrt_llm", id_inputs(ids("What is it for?"), 24, streaming=False,
                                                                temperature=0.0, exclude_input_in_output=True))
    assert reused.outputs["kv_cache_reused_blocks"] > 0
    assert cold.outputs["kv_cache_reused_blocks"] == 0
    assert reused.ids == cold.ids
