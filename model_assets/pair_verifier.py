"""The pair verifier: a MiniLM-L6 cross-encoder that reads a stored question and a new one together and says
how likely one answer serves both (scripts/train_verifier.py trains it; the int8 ONNX file ships here).

Unlike the embedding, which places each question alone, the cross-encoder attends across the two texts, so it
can see that "Celsius to Fahrenheit" and "Fahrenheit to Celsius" differ in the one place that matters. The same
code runs in Triton's `pair_verifier` model and in-process (the eval, tests), as model_assets.minilm does.

`pair_verifier.json` beside the model is the training record: the settings and data sizes it was trained
with, its metrics on the fixed test split, and its scores on the calibration split, from which the decision
threshold for an error bound is derived (orchestrator.calibration).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from model_assets.minilm import tokenizer_path

#: Tokens of a pair (both questions and three special tokens); longer pairs are cut, the longer text first.
MAX_PAIR_LENGTH = 128
MODEL_DIR = Path(__file__).resolve().parent / "pair_verifier"
MODEL_FILE = MODEL_DIR / "model.onnx"
RECORD_FILE = MODEL_DIR / "record.json"
#: The ONNX graph's inputs.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: Triton's `pair_verifier` tensors (model_repository/pair_verifier): one row per candidate, TYPE_STRING in,
#: TYPE_FP32 out; the orchestrator's client and the render-time check (stack/contract.py) use these names.
INPUT_CACHED, INPUT_QUERY, OUTPUT_SCORE = "cached", "query", "score"


def load_pair_tokenizer() -> Tokenizer:
    """MiniLM's WordPiece tokenizer encoding `[CLS] cached [SEP] query [SEP]`, padded to the batch's longest."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path()))
    tokenizer.enable_truncation(MAX_PAIR_LENGTH, strategy="longest_first")
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    """The model's three int64 inputs for a batch of (cached, query) pairs."""
    encodings = tokenizer.encode_batch([(cached, query) for cached, query in pairs])
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def load_record(path: Path = RECORD_FILE) -> dict:
    """The training record (see the module docstring)."""
    return json.loads(path.read_text(encoding="utf-8"))


class OnnxPairVerifier:
    """Scores (cached, query) pairs; thread-safe for concurrent score() calls (onnxruntime sessions are)."""

    def __init__(self, intra_op_threads: int = 1, path: Path = MODEL_FILE) -> None:
        self.tokenizer = load_pair_tokenizer()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Probability that one answer serves both questions, one float32 per pair.

        One ONNX run per pair: int8 dynamic quantisation takes each activation's scale from the whole input
        tensor, so in a shared run a pair's score would move with the pairs batched beside it and their
        padding (by up to 0.07 here). Alone, a score is a function of the pair, and the calibration table, the
        eval and Triton (whatever its batcher merges) agree. A lookup has only a few short pairs."""
        logits = [self.session.run(None, encode_pairs(self.tokenizer, [pair]))[0] for pair in pairs]
        return sigmoid(np.asarray(logits, dtype=np.float32).reshape(-1))
