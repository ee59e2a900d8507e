"""KV-cache block accounting in TensorRT-LLM's terms, derived from llama.cpp's token counts.

llama.cpp keeps a contiguous KV range per slot, not paged blocks, so blocks are derived: a block is
`tokens_per_block` tokens; a request's reused blocks are the whole blocks of its prompt that llama.cpp took
from its prompt cache (`cache_n`); its total blocks cover prompt + generated tokens; new = total - reused.
The pool view mirrors `nv_trt_llm_kv_cache_block_metrics`: max = slots x (slot context / tokens_per_block);
used = blocks of the requests running now; free = max - used; reused = blocks reused since start (cumulative);
fraction = used / max. As in TensorRT-LLM, blocks of finished requests count as free although llama.cpp
keeps their contents for reuse.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


def blocks_for(tokens: int, tokens_per_block: int) -> int:
    return -(-tokens // tokens_per_block)


@dataclass(frozen=True)
class RequestBlocks:
    reused: int
    new: int
    total: int

    @classmethod
    def of(cls, prompt_tokens: int, cached_tokens: int, generated_tokens: int, tokens_per_block: int
           ) -> RequestBlocks:
        total = blocks_for(prompt_tokens + generated_tokens, tokens_per_block)
        reused = min(cached_tokens // tokens_per_block, total)
        return cls(reused=reused, new=total - reused, total=total)


class KvBlockPool:
    """Thread-safe view of the blocks the running requests hold; one per engine."""

    def __init__(self, max_blocks: int, tokens_per_block: int) -> None:
        self.max_blocks = max_blocks
        self.tokens_per_block = tokens_per_block
        self._lock = threading.Lock()
        self._tokens: dict[int, int] = {}
        self._reused_total = 0
        self._next_id = 0

    def open(self, prompt_tokens: int) -> int:
        with self._lock:
            self._next_id += 1
            self._tokens[self._next_id] = prompt_tokens
            return self._next_id

    def update(self, handle: int, tokens: int) -> None:
        with self._lock:
            if handle in self._tokens:
                self._tokens[handle] = tokens

    def add_reused(self, blocks: int) -> None:
        with self._lock:
            self._reused_total += blocks

    def close(self, handle: int) -> None:
        with self._lock:
            self._tokens.pop(handle, None)

    def snapshot(self) -> dict[str, float]:
        """Values keyed by upstream's kv_cache_block_type label."""
        with self._lock:
            used = min(sum(blocks_for(t, self.tokens_per_block) for t in self._tokens.values()), self.max_blocks)
            reused = self._reused_total
        return {
            "max": self.max_blocks,
            "free": self.max_blocks - used,
            "used": used,
            "tokens_per": self.tokens_per_block,
            "reused": reused,
            "fraction": used / self.max_blocks if self.max_blocks else 0.0,
        }
