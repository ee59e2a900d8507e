"""The pair verifier for the semantic layer: the cross-encoder in-process (model_assets.pair_verifier, the code
Triton's `pair_verifier` model runs too) or that model on Triton. One call scores one lookup's candidates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from model_assets.pair_verifier import INPUT_CACHED, INPUT_QUERY, OUTPUT_SCORE, OnnxPairVerifier


class PairVerifier(Protocol):
    """Probability that one answer serves both questions, for each stored question against the new one."""

    async def score(self, query: str, cached: Sequence[str]) -> np.ndarray: ...


class InProcessPairVerifier:
    """OnnxPairVerifier behind the async interface (tests, a deployment without Triton); the ONNX run happens
    in a worker thread so the event loop keeps serving."""

    def __init__(self, model: OnnxPairVerifier | None = None) -> None:
        self.model = model or OnnxPairVerifier()

    async def score(self, query: str, cached: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.model.score, [(c, query) for c in cached])


class TritonPairVerifier:
    """The `pair_verifier` model over gRPC (tritonclient aio): the candidates are the rows of one request, and
    Triton's dynamic batcher merges concurrent lookups."""

    def __init__(self, url: str, model_name: str = "pair_verifier", timeout_s: float = 1.0) -> None:
        from tritonclient.grpc import aio as grpcclient

        self.client = grpcclient.InferenceServerClient(url)
        self.model_name = model_name
        self.timeout_s = timeout_s

    async def score(self, query: str, cached: Sequence[str]) -> np.ndarray:
        from tritonclient.grpc import InferInput, InferRequestedOutput

        if not cached:
            return np.zeros(0, dtype=np.float32)
        tensors = []
        for name, texts in ((INPUT_CACHED, list(cached)), (INPUT_QUERY, [query] * len(cached))):
            tensor = InferInput(name, [len(texts), 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_))
            tensors.append(tensor)
        result = await self.client.infer(self.model_name, tensors, outputs=[InferRequestedOutput(OUTPUT_SCORE)],
                                         client_timeout=self.timeout_s)
        scores = result.as_numpy(OUTPUT_SCORE)
        if scores is None or scores.shape != (len(cached), 1):
            shape = None if scores is None else scores.shape
            raise RuntimeError(f"model {self.model_name!r} returned scores of shape {shape}, "
                               f"expected {(len(cached), 1)}")
        return scores.reshape(-1).astype(np.float32, copy=False)

    async def aclose(self) -> None:
        await self.client.close()
