"""TritonEmbedder against the real Triton `embedding` model: same vectors as the in-process model."""

import asyncio

import numpy as np
import pytest

from model_assets.minilm import EMBEDDING_DIM, OnnxMiniLM
from orchestrator.backends.embedder import TritonEmbedder

pytestmark = pytest.mark.integration

TEXTS = ["How do I reset my password?", "What's the way to reset my password?", "Ünïcödé and emoji 🤗 work too",
         "x" * 3000]


@pytest.fixture(scope="module")
def reference() -> OnnxMiniLM:
    return OnnxMiniLM()


async def test_triton_vectors_match_the_in_process_model(triton, reference) -> None:
    embedder = TritonEmbedder(triton.grpc_url)
    try:
        vectors = await embedder.embed(TEXTS)
        assert vectors.shape == (len(TEXTS), EMBEDDING_DIM) and vectors.dtype == np.float32
        np.testing.assert_allclose(vectors, reference.encode(TEXTS), atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert (await embedder.embed([])).shape == (0, EMBEDDING_DIM)
    finally:
        await embedder.aclose()


async def test_more_texts_than_a_batch_and_concurrent_calls(triton, reference) -> None:
    embedder = TritonEmbedder(triton.grpc_url, max_batch_size=32)
    texts = [f"question number {i} about caching" for i in range(70)]
    try:
        many, *singles = await asyncio.gather(embedder.embed(texts), *(embedder.embed([t]) for t in texts[:8]))
        assert many.shape == (70, EMBEDDING_DIM)
        np.testing.assert_allclose(many, reference.encode(texts), atol=1e-4)
        for text_vector, single in zip(many[:8], singles):
            np.testing.assert_allclose(single[0], text_vector, atol=1e-4)
    finally:
        await embedder.aclose()


async def test_unknown_model_is_an_error(triton) -> None:
    embedder = TritonEmbedder(triton.grpc_url, model_name="no_such_model")
    try:
        with pytest.raises(Exception, match="no_such_model"):
            await embedder.embed(["hello"])
    finally:
        await embedder.aclose()


async def test_semantic_layer_through_triton_embeddings(triton, valkey) -> None:
    import time
    import uuid

    import redis.asyncio as aioredis

    from orchestrator.cache.semantic import SemanticCache, build_index
    from orchestrator.cache.types import CachedAnswer, Scope, SemanticTarget
    from orchestrator.config import SemanticSettings

    redis = aioredis.Redis.from_url(valkey.url)
    embedder = TritonEmbedder(triton.grpc_url)
    prefix = f"t{uuid.uuid4().hex[:12]}"
    try:
        cache = SemanticCache(redis, embedder, await build_index(SemanticSettings(), redis, prefix), prefix)
        scope = Scope("acme", "9" * 64)
        stored = CachedAnswer("Use `ls -l`.", "m", 3, 4, "stop", time.time(), "k" * 64)
        await cache.store(SemanticTarget(scope, "How do I list files with their sizes on Linux?"), stored, ttl_s=60)
        hit = await cache.lookup(SemanticTarget(scope, "How can I list files and their sizes in Linux?"))
        assert hit is not None and hit.answer == stored
        assert await cache.lookup(SemanticTarget(scope, "How do I list files with their sizes on Windows?")) is None
        await cache.invalidate_all()
        await cache.index.drop()
    finally:
        await embedder.aclose()
        await redis.aclose()
