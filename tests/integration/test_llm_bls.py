"""The BLS model on the real Triton: same text as the ensemble, streaming deltas, cancellation reaches the engine."""

from __future__ import annotations

import pytest
import tritonclient.grpc.aio as grpcaio

from cpu_engine.client import generate, text_inputs
from model_assets.chat import format_chat
from stack.triton import TritonServer
from tests.integration.test_llm_ensemble import LONG_STORY, assert_cancel_frees_the_engine

PROMPT = format_chat([{"role": "user", "content": "Name three rivers in Europe."}])


@pytest.fixture
async def client(triton: TritonServer):
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    yield client
    await client.close()


async def test_bls_matches_the_ensemble_streaming_and_not(client) -> None:
    ensemble = await generate(client, "ensemble", text_inputs(PROMPT, 24, stream=False, temperature=0.0))
    whole = await generate(client, "tensorrt_llm_bls", text_inputs(PROMPT, 24, stream=False, temperature=0.0))
    streamed = await generate(client, "tensorrt_llm_bls", text_inputs(PROMPT, 24, stream=True, temperature=0.0))
    assert ensemble.error is None and whole.error is None and streamed.error is None
    assert whole.text == ensemble.text == streamed.text
    assert streamed.responses > 3 and all("\ufffd" not in delta for delta in streamed.texts)
    assert streamed.outputs["kv_cache_alloc_total_blocks"] > 0


async def test_bls_with_input_included_returns_prompt_and_answer(client) -> None:
    result = await generate(client, "tensorrt_llm_bls", text_inputs(PROMPT, 8, stream=False, temperature=0.0,
                                                                    exclude_input_in_output=False))
    assert result.error is None and result.text.startswith(PROMPT) and len(result.text) > len(PROMPT)


async def test_cancelling_a_bls_stream_stops_the_engine(client, triton: TritonServer) -> None:
    await assert_cancel_frees_the_engine(client, triton, "tensorrt_llm_bls",
                                         text_inputs(LONG_STORY, 2000, stream=True))


async def test_bls_missing_max_tokens_names_the_input(client) -> None:
    from cpu_engine.client import tensor

    result = await generate(client, "tensorrt_llm_bls", [tensor("text_input", [PROMPT])])
    assert result.error is not None and "max_tokens" in str(result.error)
