"""The model's own vocabulary for the Python models: tokenizer.json exported from the GGUF at set-up.

Ids are identical to llama.cpp's tokenizer for the same text (tests/unit/test_tokenizer_llama.py checks it).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from tokenizers import Tokenizer

from model_assets import llm


@lru_cache(maxsize=4)
def load(directory: str = "") -> Tokenizer:
    """The tokenizer of a model's `tokenizer_dir` parameter (model_assets.llm.tokenizer_dir)."""
    return Tokenizer.from_file(str(llm.tokenizer_dir(directory) / "tokenizer.json"))


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """Ids of text as the model sees it: special tokens in the text (chat markers) are parsed, nothing added."""
    return tokenizer.encode(text, add_special_tokens=False).ids


def encode_batch(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """`encode` for many texts in one call (the tokenizer's batch path), in order."""
    return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


def single_prompt(prompts: list[str]) -> str:
    """A request's `text_input`: exactly one string, or a ValueError naming the input."""
    if len(prompts) != 1:
        raise ValueError(f"text_input: expected one string per request, got {len(prompts)}")
    return prompts[0]


def prompt_ids(ids: list[int]) -> list[int]:
    """A prompt's ids, refused when the prompt encodes to nothing."""
    if not ids:
        raise ValueError("text_input: the prompt is empty")
    return ids


def encode_prompt(tokenizer: Tokenizer, prompts: list[str]) -> list[int]:
    """The ids of a request's `text_input`: exactly one non-empty prompt, or a ValueError naming the input."""
    return prompt_ids(encode(tokenizer, single_prompt(prompts)))


def word_list(tokenizer: Tokenizer, words: list[str]) -> np.ndarray:
    """Upstream's [2, L] word-list tensor: ids back to back (padded with 0), end offsets (padded with -1).
    No words gives [[0], [-1]], which means 'none' to the engine."""
    ids: list[int] = []
    offsets: list[int] = []
    for word in words:
        if word:
            ids.extend(encode(tokenizer, word))
            offsets.append(len(ids))
    width = max(len(ids), len(offsets), 1)
    out = np.zeros((2, width), dtype=np.int32)
    out[1, :] = -1
    out[0, :len(ids)] = ids
    out[1, :len(offsets)] = offsets
    return out
