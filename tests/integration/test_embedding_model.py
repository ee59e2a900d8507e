"""The `embedding` model on the real Triton: every client flavour, identical vectors, and real batching."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from model_assets.minilm import EMBEDDING_DIM, OnnxMiniLM
from stack.triton import TritonServer
from stack.triton_stats import model_stats

SENTENCES = ["What is the capital of France?", "Which city is France's capital?", "Convert 30 °C to °F"]


def text_batch(module, sentences: list[str]):
    tensor = module.InferInput("text", [len(sentences), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[s.encode()] for s in sentences], dtype=object))
    return tensor


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    return OnnxMiniLM().encode(SENTENCES)


def test_http_sync(triton: TritonServer, expected: np.ndarray) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    vectors = client.infer("embedding", [text_batch(httpclient, SENTENCES)]).as_numpy("embedding")
    assert vectors.shape == (len(SENTENCES), EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


def test_grpc_sync(triton: TritonServer, expected: np.ndarray) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    vectors = client.infer("embedding", [text_batch(grpcclient, SENTENCES)]).as_numpy("embedding")
    np.testing.assert_allclose(vectors, expected, atol=1e-4)


async def test_http_asyncio(triton: TritonServer, expected: np.ndarray) -> None:
    async with httpaio.InferenceServerClient(triton.http_url) as client:
        results = await asyncio.gather(*(
            client.infer("embedding", [text_batch(httpaio, [s])]) for s in SENTENCES))
    np.testing.assert_allclose(np.concatenate([r.as_numpy("embedding") for r in results]), expected, atol=1e-4)


async def test_grpc_asyncio(triton: TritonServer, expected: np.ndarray) -> None:
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    try:
        results = await asyncio.gather(*(
            client.infer("embedding", [text_batch(grpcaio, [s])]) for s in SENTENCES))
    finally:
        await client.close()
    np.testing.assert_allclose(np.concatenate([r.as_numpy("embedding") for r in results]), expected, atol=1e-4)


def test_concurrent_requests_are_batched(triton: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton.http_url, concurrency=16)
    before = model_stats(client, "embedding")
    requests = 96
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda i: httpclient.InferenceServerClient(triton.http_url).infer(
            "embedding", [text_batch(httpclient, [f"sentence number {i}"])]), range(requests)))
    formed = model_stats(client, "embedding").minus(before)
    assert formed.inference_count == requests
    assert sum(size * count for size, count in formed.batches.items()) == requests
    assert formed.execution_count < requests
    assert max(formed.batches) > 1, formed.batches


def test_wrong_input_type_is_refused_with_a_message(triton: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    wrong = httpclient.InferInput("text", [1, 1], "INT32")
    wrong.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="data-type|datatype|TYPE_STRING|BYTES"):
        client.infer("embedding", [wrong])
