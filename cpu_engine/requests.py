"""Upstream `tensorrt_llm` input tensors → one llama.cpp completion request on token ids.

Meanings follow TensorRT-LLM: greedy when `temperature` is 0 or neither `runtime_top_k` nor `runtime_top_p`
is set (top_k 0 and top_p 0); `stop_words_list`/`bad_words_list` are [2, L] (ids, then end offsets padded
with -1); stop words are matched on token ids and stay in the output, `end_id` ends the sequence and does not; a
negative `end_id` means "never stop early" (TensorRT-LLM benchmarks' eos_id -1), llama.cpp's ignore_eos.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

UINT32_RANGE = 2**32


class InvalidRequest(ValueError):
    """The request cannot be served as given; the message names the input tensor."""


def parse_word_list(name: str, value: np.ndarray) -> list[list[int]]:
    """Upstream's word-list format [2, L] (optionally with a leading batch dim): row 0 holds the token ids of
    all words back to back, row 1 each word's end offset into row 0, padded with -1."""
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[0] != 2:
        raise InvalidRequest(f"{name}: expected shape [2, L] (ids, offsets), got {list(np.asarray(value).shape)}")
    ids, offsets = array[0].tolist(), [int(o) for o in array[1].tolist() if o >= 0]
    words, start = [], 0
    for end in offsets:
        if end < start or end > len(ids):
            raise InvalidRequest(f"{name}: offset {end} out of order or beyond the {len(ids)} ids")
        if end > start:
            words.append([int(t) for t in ids[start:end]])
        start = end
    return words


def _scalar(inputs: Mapping[str, np.ndarray], name: str, kind: type, default=None):
    value = inputs.get(name)
    if value is None:
        return default
    array = np.asarray(value).reshape(-1)
    if array.size != 1:
        raise InvalidRequest(f"{name}: expected one value per request, got {array.size}")
    return kind(array[0])


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1 or (self.top_k == 0 and self.top_p == 0.0)

    def to_llama(self) -> dict:
        """llama.cpp sampling fields; min_p is switched off because TensorRT-LLM has no such filter."""
        fields = {
            "temperature": 0.0 if self.greedy else self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p if self.top_p > 0.0 else 1.0,
            "min_p": 0.0,
            "repeat_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        if self.seed is not None:
            fields["seed"] = self.seed % UINT32_RANGE
        return fields


@dataclass(frozen=True)
class GenerationRequest:
    input_ids: list[int]
    max_new_tokens: int
    streaming: bool = False
    exclude_input_in_output: bool = False
    end_id: int | None = None
    pad_id: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    stop_words: list[list[int]] = field(default_factory=list)
    bad_token_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, np.ndarray], exclude_input_default: bool = False) -> GenerationRequest:
        """Map one request's tensors (batch dim of 1 included or not) to a request; InvalidRequest names the input."""
        if "input_ids" not in inputs:
            raise InvalidRequest("input_ids: required input missing")
        ids = np.asarray(inputs["input_ids"]).reshape(-1)
        length = _scalar(inputs, "input_lengths", int)
        if length is not None:
            if not 0 < length <= ids.size:
                raise InvalidRequest(f"input_lengths: {length} is not within 1..{ids.size} (the ids given)")
            ids = ids[:length]
        if ids.size == 0:
            raise InvalidRequest("input_ids: the prompt is empty")
        max_new = _scalar(inputs, "request_output_len", int)
        if max_new is None:
            raise InvalidRequest("request_output_len: required input missing")
        if max_new < 1:
            raise InvalidRequest(f"request_output_len: must be >= 1, got {max_new}")
        beam_width = _scalar(inputs, "beam_width", int, 1)
        if beam_width != 1:
            raise InvalidRequest(f"beam_width: the CPU engine decodes with beam width 1 only, got {beam_width}")
        sampling = Sampling(
            temperature=_scalar(inputs, "temperature", float, 1.0),
            top_k=_scalar(inputs, "runtime_top_k", int, 0),
            top_p=_scalar(inputs, "runtime_top_p", float, 0.0),
            seed=_scalar(inputs, "seed", int),
            repetition_penalty=_scalar(inputs, "repetition_penalty", float, 1.0),
            presence_penalty=_scalar(inputs, "presence_penalty", float, 0.0),
            frequency_penalty=_scalar(inputs, "frequency_penalty", float, 0.0),
        )
        if sampling.temperature < 0.0:
            raise InvalidRequest(f"temperature: must be >= 0, got {sampling.temperature}")
        if sampling.top_k < 0:
            raise InvalidRequest(f"runtime_top_k: must be >= 0, got {sampling.top_k}")
        if not 0.0 <= sampling.top_p <= 1.0:
            raise InvalidRequest(f"runtime_top_p: must be within [0, 1], got {sampling.top_p}")
        bad_words = parse_word_list("bad_words_list", inputs["bad_words_list"]) if "bad_words_list" in inputs else []
        if any(len(word) != 1 for word in bad_words):
            raise InvalidRequest("bad_words_list: the CPU engine bans single-token words only (llama.cpp logit bias)")
        return cls(
            input_ids=[int(i) for i in ids.tolist()],
            max_new_tokens=max_new,
            streaming=_scalar(inputs, "streaming", bool, False),
            exclude_input_in_output=_scalar(inputs, "exclude_input_in_output", bool, exclude_input_default),
            end_id=_scalar(inputs, "end_id", int),
            pad_id=_scalar(inputs, "pad_id", int),
            sampling=sampling,
            stop_words=parse_word_list("stop_words_list", inputs["stop_words_list"]) if "stop_words_list" in inputs
            else [],
            bad_token_ids=[word[0] for word in bad_words],
        )

    def to_llama(self, cache_prompt: bool, max_new_tokens: int | None = None) -> dict:
        """The llama.cpp completion request: streamed per token with per-token timings (cache_n comes first)."""
        request = {
            "prompt": self.input_ids,
            "n_predict": max_new_tokens or self.max_new_tokens,
            "stream": True,
            "cache_prompt": cache_prompt,
            "verbose": True,
            "timings_per_token": True,
            **self.sampling.to_llama(),
        }
        if self.end_id is not None and self.end_id < 0:
            request["ignore_eos"] = True
        if self.bad_token_ids:
            request["logit_bias"] = [[token, False] for token in self.bad_token_ids]
        return request
