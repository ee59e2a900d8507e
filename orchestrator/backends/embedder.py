"""Sentence embeddings for the semantic layer: MiniLM in-process (model_assets.minilm, the code Triton's
`embedding` model runs too, so both give identical vectors) or the `embedding` model on Triton.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from model_assets.minilm import EMBEDDING_DIM, OnnxMiniLM


class Embedder(Protocol):
    """Sentence embeddings as the semantic layer needs them: unit-length float32 rows, one per text."""

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class InProcessEmbedder:
    """OnnxMiniLM behind the async Embedder interface (tools, tests, a deployment without Triton); the
    ONNX run happens in a worker thread so the event loop keeps serving."""

    def __init__(self, model: OnnxMiniLM | None = None) -> None:
        self.model = model or OnnxMiniLM()

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.model.encode, list(texts))


class TritonEmbedder:
    """The `embedding` model on Triton over gRPC (tritonclient aio). Each call sends its texts as one
    request of up to the model's max_batch_size rows; Triton's dynamic batcher merges concurrent calls."""

    def __init__(self, url: str, model_name: str = "embedding", timeout_s: float = 10.0,
                 max_batch_size: int = 32) -> None:
        from tritonclient.grpc import aio as grpcclient

        self.client = grpcclient.InferenceServerClient(url)
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.max_batch_size = max_batch_size

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        chunks = [texts[i:i + self.max_batch_size] for i in range(0, len(texts), self.max_batch_size)]
        parts = await asyncio.gather(*(self._infer(chunk) for chunk in chunks))
        return np.concatenate(parts).astype(np.float32, copy=False)

    async def _infer(self, texts: Sequence[str]) -> np.ndarray:
        from tritonclient.grpc import InferInput, InferRequestedOutput

        batch = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        tensor = InferInput("text", list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        result = await self.client.infer(self.model_name, [tensor], outputs=[InferRequestedOutput("embedding")],
                                         client_timeout=self.timeout_s)
        vectors = result.as_numpy("embedding")
        if vectors is None or vectors.shape != (len(texts), EMBEDDING_DIM):
            shape = None if vectors is None else vectors.shape
            raise RuntimeError(f"model {self.model_name!r} returned embedding of shape {shape}, "
                               f"expected {(len(texts), EMBEDDING_DIM)}")
        return vectors

    async def aclose(self) -> None:
        await self.client.close()
