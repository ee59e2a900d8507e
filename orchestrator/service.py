"""The layered service: exact cache → semantic cache → Triton, behind one API both front ends call.

Per request: validate; plan what the cache may do (orchestrator.cache.policy); look up the exact layer, then
the semantic layer (same context scope only); on a miss join or start a single-flight generation that
streams tokens as they come and, once complete, stores the answer in both layers. What is never stored: an
error, a cancelled or otherwise partial stream, an answer cut by max_tokens (unless configured), anything
for a request with no-store. Redis or the semantic layer failing only costs the cache (warning + metric);
the request is still served by the backend.

Streams: the first chunk carries `cache`. A hit replays as two chunks (the whole text with `cache`, then
`finish_reason` + `usage`); a miss forwards every backend delta, the first with `cache`, the last with
`finish_reason`, `usage` and the engine's `kv_cache_reused_blocks`. Stop sequences end the answer and are
not returned (OpenAI's meaning; orchestrator.streams.StopScanner). Identical concurrent misses share one
backend call; followers get the same chunks (those already produced, then the rest as they come), with
`cache.layer` "miss". Closing the stream early stops the generation (the backend stops it by request id)
unless another caller still follows it. The semantic layer's life cycle is orchestrator.cache.semantic_stage's;
statistics and invalidation are orchestrator.admin's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import numpy as np

from orchestrator import admin, metrics
from orchestrator.backends.triton_llm import BackendDelta
from orchestrator.cache import keys, policy
from orchestrator.cache.exact import ExactCache, connect, tokens_saved
from orchestrator.cache.semantic_stage import SemanticStage
from orchestrator.cache.types import CachedAnswer, Layer, SemanticLayer, SemanticTarget
from orchestrator.config import Settings
from orchestrator.errors import InvalidRequest
from orchestrator.schemas import (
    CacheControls,
    CacheInfo,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    StreamChunk,
    Usage,
)
from orchestrator.singleflight import SingleFlight
from orchestrator.streams import EarlyStart, StopScanner, collect
from orchestrator.validation import validate_controls, validate_embedding_input, validate_request


class LLMBackend(Protocol):
    def stream(self, prompt: str, params: SamplingParams, request_id: str = "") -> AsyncIterator[BackendDelta]: ...

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _default_chat_formatter(tokenizer_dir: str) -> Callable[[GenerationRequest], str]:
    from model_assets.chat import format_chat

    def render(request: GenerationRequest) -> str:
        return format_chat([{"role": m.role, "content": m.content} for m in request.messages],
                           tokenizer_dir=tokenizer_dir)

    return render


def _counted_hit(layer: Layer, answer: CachedAnswer, similarity: float | None = None) -> CacheInfo:
    """What a hit tells the caller, counted in the hit metrics."""
    saved = tokens_saved(answer)
    metrics.CACHE_HITS.labels(layer).inc()
    metrics.TOKENS_SAVED.labels(layer).inc(saved)
    return CacheInfo(layer=layer, key=answer.key, similarity=similarity, tokens_saved=saved)


class CachedLLMService:
    def __init__(self, settings: Settings, exact: ExactCache, backend: LLMBackend,
                 semantic: SemanticLayer | None = None, embedder: Embedder | None = None,
                 chat_formatter: Callable[[GenerationRequest], str] | None = None,
                 semantic_factory: Callable[[], Awaitable[SemanticLayer]] | None = None,
                 closers: Sequence[object] = ()) -> None:
        """`semantic_factory` builds the semantic layer later when it could not be built at start (Redis
        down): tried at most once per `redis.retry_after_s` until it succeeds. `closers`: clients the layers
        use (the pair verifier's), closed by aclose()."""
        self.settings = settings
        self.exact = exact
        self.backend = backend
        self.semantic = SemanticStage(settings.semantic, settings.redis.retry_after_s, semantic, semantic_factory)
        self.embedder = embedder
        self.closers = tuple(closers)
        tokenizer_dir = str(settings.model.tokenizer_dir or "")
        self.format_chat = chat_formatter or _default_chat_formatter(tokenizer_dir)
        self.flights: SingleFlight[StreamChunk] = SingleFlight()

    @classmethod
    async def create(cls, settings: Settings) -> CachedLLMService:
        """Connect Redis and Triton and build the layers (the semantic layer from its own module)."""
        from orchestrator.backends.embedder import TritonEmbedder
        from orchestrator.backends.pair_verifier import TritonPairVerifier
        from orchestrator.backends.placements import PrefixPlacements
        from orchestrator.backends.replicated_llm import llm_backend
        from orchestrator.cache.semantic import build_semantic_layer

        redis = connect(settings.redis)
        exact = ExactCache(redis, settings.redis.key_prefix, settings.cache.max_entry_bytes,
                           settings.redis.retry_after_s)
        embedder = TritonEmbedder(settings.triton.url, settings.triton.embedding_model,
                                  timeout_s=settings.triton.unary_timeout_s)
        placements = (PrefixPlacements(redis, settings.redis.key_prefix, settings.triton.routing_placement_ttl_s,
                                       settings.redis.retry_after_s, settings.triton.routing_prefix_chars)
                      if settings.triton.routing_placements and settings.triton.replicated else None)
        verifier = (TritonPairVerifier(settings.triton.url, settings.triton.pair_verifier_model,
                                       timeout_s=settings.semantic.verifier.timeout_s)
                    if settings.semantic.verifier.enabled else None)
        service = cls(settings, exact, llm_backend(settings.triton, settings.model, placements), embedder=embedder,
                      semantic_factory=lambda: build_semantic_layer(settings, redis, embedder, verifier),
                      closers=(verifier,) if verifier is not None else ())
        await service.semantic.available()
        return service

    # Public API -------------------------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest, controls: CacheControls = CacheControls()) -> GenerationResult:
        """The whole answer at once: the stream below, collected."""
        return await collect(self.stream(request, controls))

    async def stream(self, request: GenerationRequest,
                     controls: CacheControls = CacheControls()) -> AsyncIterator[StreamChunk]:
        """Validation errors, and backend errors before the first token, raise at the first `anext`."""
        validate_request(request, self.settings.model)
        validate_controls(controls, self.settings.cache)
        plan = policy.plan(request, controls, self.settings.cache)
        key = keys.request_key(request)
        target: SemanticTarget | None = None
        chunks: AsyncIterator[StreamChunk] | None = None
        if plan.lookup:
            hit = await self._exact_hit(request, plan, key)
            if hit is None:
                target = self.semantic.target(request, plan.namespace)
                hit, chunks = await self._semantic_hit(request, plan, key, target)
            if hit is not None:
                answer, info = hit
                yield StreamChunk(text=answer.text, cache=info)
                yield StreamChunk(text="", finish_reason=answer.finish_reason,
                                  usage=Usage(answer.prompt_tokens, answer.completion_tokens))
                return
            metrics.CACHE_MISSES.inc()
            await self.exact.record(request.tenant, "misses")
        else:
            metrics.CACHE_BYPASSES.labels(plan.bypass_reason or "unknown").inc()
            target = self.semantic.target(request, plan.namespace) if plan.store else None
        info = CacheInfo(layer="miss", key=key)
        first = True
        async with contextlib.aclosing(chunks or self._backend_chunks(request, plan, key, target)) as stream:
            async for chunk in stream:
                if first:
                    chunk = StreamChunk(text=chunk.text, cache=info, finish_reason=chunk.finish_reason,
                                        usage=chunk.usage, kv_cache_reused_blocks=chunk.kv_cache_reused_blocks)
                    first = False
                yield chunk

    async def embed(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise InvalidRequest("input", "embeddings are not served by this orchestrator")
        validate_embedding_input(texts)
        return await self.embedder.embed(texts)

    async def stats(self, tenant: str | None = None) -> dict:
        return await admin.stats(self.exact, tenant, in_flight=len(self.flights))

    async def invalidate(self, tenant: str | None = None, key: str | None = None,
                         namespace: str | None = None) -> int:
        return await admin.invalidate(self.exact, self.semantic, tenant, key, namespace)

    async def readiness(self) -> dict[str, bool]:
        triton, redis = await asyncio.gather(self.backend.ready(), self.exact.ping())
        return {"triton": triton, "redis": redis}

    async def aclose(self) -> None:
        await self.semantic.settle()
        await self.backend.aclose()
        for client in (self.embedder, *self.closers):
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()
        await self.exact.aclose()

    # Internals --------------------------------------------------------------------------------------------------

    async def _exact_hit(self, request: GenerationRequest, plan: policy.CachePlan,
                         key: str) -> tuple[CachedAnswer, CacheInfo] | None:
        answer = await self.exact.get(request.tenant, plan.namespace, key)
        return None if answer is None else (answer, _counted_hit("exact", answer))

    async def _semantic_hit(self, request: GenerationRequest, plan: policy.CachePlan, key: str,
                            target: SemanticTarget | None
                            ) -> tuple[tuple[CachedAnswer, CacheInfo] | None, AsyncIterator[StreamChunk] | None]:
        """The semantic layer's answer, or on a miss the backend stream if it was started speculatively.

        The lookup embeds the query (milliseconds on Triton). With `cache.speculative_generation` the backend
        call starts at the same time, so a miss pays no embedding latency before its first token; a hit
        closes that stream, which stops the generation (or leaves a flight others still follow)."""
        if target is None or not await self.semantic.available():
            return None, None
        speculative = EarlyStart(self._backend_chunks(request, plan, key, target)) \
            if self.settings.cache.speculative_generation else None
        hit = await self.semantic.lookup(target)
        if hit is None:
            return None, speculative
        if speculative is not None:
            await speculative.aclose()
        info = _counted_hit("semantic", hit.answer, hit.similarity)
        await self.exact.record(request.tenant, "semantic_hits", info.tokens_saved)
        return (hit.answer, info), None

    def _backend_chunks(self, request: GenerationRequest, plan: policy.CachePlan, key: str,
                        target: SemanticTarget | None) -> AsyncIterator[StreamChunk]:
        """The generation's chunks: a single-flight subscription when the answer may be shared."""
        if not plan.share:
            return self._generate(request, plan, key, target)
        flight_key = (request.tenant, plan.namespace, key, plan.store, plan.ttl_s)
        chunks, leader = self.flights.join(flight_key, lambda: self._generate(request, plan, key, target))
        if not leader:
            metrics.SINGLEFLIGHT_JOINED.inc()
        return chunks

    def _prompt(self, request: GenerationRequest) -> str:
        return request.prompt if request.prompt is not None else self.format_chat(request)

    async def _generate(self, request: GenerationRequest, plan: policy.CachePlan, key: str,
                        target: SemanticTarget | None) -> AsyncIterator[StreamChunk]:
        """Run one backend generation, yield its chunks, and store it if it completed and may be stored."""
        stops = StopScanner(request.params.stop)
        parts: list[str] = []
        input_tokens = output_tokens = kv_blocks = None
        streamed = 0
        async with contextlib.aclosing(self.backend.stream(self._prompt(request), request.params,
                                                           uuid.uuid4().hex)) as deltas:
            async for delta in deltas:
                streamed += not delta.final
                input_tokens = delta.input_tokens or input_tokens
                if delta.output_tokens is not None:
                    output_tokens = (output_tokens or 0) + delta.output_tokens
                if delta.kv_cache_reused_blocks is not None:
                    kv_blocks = delta.kv_cache_reused_blocks
                text, stopped = stops.push(delta.text, final=delta.final)
                parts.append(text)
                if not (delta.final or stopped):
                    if text:
                        yield StreamChunk(text=text)
                    continue
                # Ended by the engine, or by a stop sequence seen here (the backend stream is then closed,
                # which stops the rest of the generation).
                completion = output_tokens if delta.final and output_tokens else streamed
                length_cut = not stopped and completion >= request.params.max_tokens
                finish_reason = "length" if length_cut else "stop"
                usage = Usage(prompt_tokens=input_tokens or 0, completion_tokens=completion)
                if kv_blocks:
                    metrics.KV_CACHE_REUSED_BLOCKS.inc(kv_blocks)
                # Store before the last chunk: a caller may close the stream as soon as it has it.
                await self._store(request, plan, target, CachedAnswer(
                    text="".join(parts), model=request.model, prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens, finish_reason=finish_reason,
                    created_at=time.time(), key=key))
                yield StreamChunk(text=text, finish_reason=finish_reason, usage=usage,
                                  kv_cache_reused_blocks=kv_blocks)
                return

    async def _store(self, request: GenerationRequest, plan: policy.CachePlan, target: SemanticTarget | None,
                     answer: CachedAnswer) -> None:
        if not plan.store:
            reason = plan.bypass_reason if plan.bypass_reason in ("disabled", "sampled") else "no_store"
            metrics.CACHE_STORES_SKIPPED.labels(reason).inc()
            return
        if not policy.storable(answer.finish_reason, self.settings.cache):
            metrics.CACHE_STORES_SKIPPED.labels(answer.finish_reason).inc()
            return
        if not self.exact.fits(answer):  # the cap holds for both layers
            metrics.CACHE_STORES_SKIPPED.labels("too_large").inc()
            return
        if await self.exact.set(request.tenant, plan.namespace, answer, plan.ttl_s):
            metrics.CACHE_STORES.labels("exact").inc()
        if target is not None:
            await self.semantic.store(target, answer, plan.ttl_s)  # in the background, off the stream
