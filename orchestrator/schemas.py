"""The service's request and result types, shared by the layered service and both APIs (gRPC, HTTP).

The APIs translate their wire formats into `GenerationRequest` and back; the service never sees HTTP or
protobuf types. Everything that can change a generation's output is a field here, so that the exact-cache
key (orchestrator.cache.keys) can cover all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.cache.types import Layer

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """Output-affecting generation parameters (OpenAI names; mapped to the inputs of the LLM model on Triton,
    `tensorrt_llm_bls` by default or the `ensemble`, which take the same ones)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None
    tools: tuple[dict[str, Any], ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """A chat (messages) or a plain completion (prompt, no chat template applied)."""

    tenant: str
    model: str
    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class CacheControls:
    """Per-request cache behaviour: Cache-Control headers or the body's extension field."""

    no_cache: bool = False  # do not answer from the cache (still store the fresh answer)
    no_store: bool = False  # do not store this answer
    ttl_s: int | None = None  # override the configured TTL for what is stored
    namespace: str | None = None  # a cache namespace inside the tenant


@dataclass(frozen=True)
class CacheInfo:
    layer: Layer
    key: str
    similarity: float | None = None
    tokens_saved: int = 0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str  # "stop" | "length"
    usage: Usage
    cache: CacheInfo
    kv_cache_reused_blocks: int | None = None  # as reported by the engine, on a miss
    ttft_ms: float | None = None


@dataclass(frozen=True)
class StreamChunk:
    """One streamed piece. The first chunk of every stream carries `cache`; the last carries `finish_reason`
    and `usage`. Text deltas never split a UTF-8 character."""

    text: str
    cache: CacheInfo | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    kv_cache_reused_blocks: int | None = None
