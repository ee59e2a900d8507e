"""Token ids → text deltas that never end inside a multi-byte UTF-8 character.

Byte-level BPE tokens can carry part of a character; decoding them alone gives U+FFFD. The decoder keeps the
ids since the last emitted boundary and emits text only up to the last complete character.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._pending: list[int] = []

    def push(self, ids: list[int]) -> str:
        """Add ids; return the text that is now complete (possibly empty)."""
        self._pending.extend(ids)
        text = self._decode(self._pending)
        if text.endswith(REPLACEMENT):
            return ""
        self._pending.clear()
        return text

    def flush(self) -> str:
        """The rest at the end of the stream, complete or not."""
        text = self._decode(self._pending) if self._pending else ""
        self._pending.clear()
        return text
