"""Reads llama.cpp's streamed completion chunks into upstream's view: new token ids, why it stopped, KV reuse.

llama.cpp holds back a token whose bytes end inside a multi-byte UTF-8 character and then sends only the
completing token's id with the whole character as `content`; the chunk's `tokens_predicted` shows how many ids
were skipped. Those few ids are re-derived from the chunk's text with the model's own tokenizer, so every
chunk maps to complete characters and the text is exact (the ids of such a character are its canonical
tokenization). Stop words are matched on token ids (TensorRT-LLM's semantics) and cancel the llama.cpp task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

FINISH_LENGTH = "length"
FINISH_STOP = "stop"
FINISH_CANCELLED = "cancelled"


class EngineError(RuntimeError):
    """llama.cpp refused or failed the request; the message is llama.cpp's."""


@dataclass
class CompletionStream:
    encode_text: Callable[[str], list[int]]
    stop_words: list[list[int]] = field(default_factory=list)
    end_id: int | None = None
    generated: list[int] = field(default_factory=list)
    #: Prompt tokens llama.cpp took from its cache (None until the first chunk with timings).
    cached_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    _engine_count: int = 0

    def feed(self, chunk: dict) -> tuple[list[int], bool]:
        """Consume one chunk; returns (ids new to the output, whether to stop the llama.cpp task now)."""
        if "error" in chunk:
            error = chunk["error"]
            self.error = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            return [], True
        timings = chunk.get("timings")
        if timings and self.cached_tokens is None:
            self.cached_tokens = int(timings.get("cache_n", 0))
        verbose = chunk.get("__verbose", {})
        ids = [int(t) for t in verbose.get("tokens", [])]
        content = verbose.get("content", "")
        count = int(verbose.get("tokens_predicted", self._engine_count + len(ids)))
        final = bool(verbose.get("stop")) or chunk.get("choices", [{}])[0].get("finish_reason") is not None
        if not final and count - self._engine_count > len(ids) and content:
            ids = self.encode_text(content)
        elif final and not ids and content:
            ids = self.encode_text(content)
        self._engine_count = max(count, self._engine_count)
        emitted, stop = self._append(ids)
        if final and self.finish_reason is None:
            reason = chunk.get("choices", [{}])[0].get("finish_reason") or verbose.get("stop_type")
            self.finish_reason = FINISH_LENGTH if reason in ("length", "limit") else FINISH_STOP
        return emitted, stop

    def _append(self, ids: list[int]) -> tuple[list[int], bool]:
        emitted: list[int] = []
        for token in ids:
            if self.end_id is not None and token == self.end_id:
                self.finish_reason = FINISH_STOP
                return emitted, True
            self.generated.append(token)
            emitted.append(token)
            if any(word and self.generated[-len(word):] == word for word in self.stop_words):
                self.finish_reason = FINISH_STOP
                return emitted, True
        return emitted, False
