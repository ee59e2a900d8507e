"""TritonPairVerifier against the real Triton `pair_verifier` model: one request per lookup, the same scores as
the in-process model, concurrent lookups answered each with their own rows."""

import asyncio

import numpy as np
import pytest

from model_assets.pair_verifier import OnnxPairVerifier
from orchestrator.backends.pair_verifier import TritonPairVerifier

pytestmark = pytest.mark.integration

QUERY = "How do I reset my password?"
CACHED = ["What's the way to reset my password?", "How do I change my password?", "Ünïcödé and emoji 🤗 too",
          "x " * 400]


@pytest.fixture(scope="module")
def reference() -> OnnxPairVerifier:
    return OnnxPairVerifier()


async def test_triton_scores_match_the_in_process_model(triton, reference) -> None:
    verifier = TritonPairVerifier(triton.grpc_url)
    try:
        scores = await verifier.score(QUERY, CACHED)
        assert scores.shape == (len(CACHED),) and scores.dtype == np.float32
        np.testing.assert_allclose(scores, reference.score([(c, QUERY) for c in CACHED]), atol=1e-4)
        assert ((0.0 <= scores) & (scores <= 1.0)).all()
        assert (await verifier.score(QUERY, [])).shape == (0,)
    finally:
        await verifier.aclose()


async def test_concurrent_lookups_get_their_own_rows(triton, reference) -> None:
    verifier = TritonPairVerifier(triton.grpc_url)
    queries = [f"How do I reset the password of account {i}?" for i in range(12)]
    try:
        results = await asyncio.gather(*(verifier.score(q, CACHED[:3]) for q in queries))
        for query, scores in zip(queries, results):
            np.testing.assert_allclose(scores, reference.score([(c, query) for c in CACHED[:3]]), atol=1e-4)
    finally:
        await verifier.aclose()


async def test_unknown_model_is_an_error(triton) -> None:
    verifier = TritonPairVerifier(triton.grpc_url, model_name="no_such_model")
    try:
        with pytest.raises(Exception, match="no_such_model"):
            await verifier.score(QUERY, CACHED[:1])
    finally:
        await verifier.aclose()
