"""The semantic layer: answer a paraphrase of an earlier question from the same context scope.

A lookup embeds the last user message, asks the vector index for the nearest entries of the request's
scope (tenant, model, system prompt, earlier turns, sampling class: `Scope.digest`, computed by the
service), and serves the nearest one whose similarity reaches the threshold AND that the near-miss guard
accepts (orchestrator.cache.guard). Entries are Redis hashes with the request's TTL; the index (RediSearch
or in-process faiss, orchestrator.cache.vector_index) follows them, so an expired entry is never served.

Decision (SemanticMatcher): candidates whose cosine similarity (all-MiniLM-L6-v2 embeddings, unit vectors;
1.0 = same direction, ~0.2 = unrelated) reaches `semantic.threshold` and that the guard lets through are
served, nearest first. With the pair verifier on (a cross-encoder on Triton, one request per lookup), the
candidates the guard lets through from a lower bar up are scored too: above the threshold the verifier can
veto a pair it is confident differs; in the band below it, a pair is served only when the verifier is
confident it is the same question (the bar calibrated for `semantic.max_error_rate`). Every setting, with its default and the
reason for it, is orchestrator.config.SemanticSettings.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from model_assets.minilm import EMBEDDING_DIM
from orchestrator import metrics
from orchestrator.backends.embedder import Embedder
from orchestrator.backends.pair_verifier import PairVerifier
from orchestrator.calibration import Bars, verifier_bars
from orchestrator.cache.guard import NearMissGuard
from orchestrator.cache.scan import glob_escape, unlink_matching
from orchestrator.cache.types import CachedAnswer, Scope, SemanticHit, SemanticTarget, pack_answer, unpack_answer
from orchestrator.cache.vector_index import (
    F_ANSWER, F_EXPIRES, F_QUERY, F_SCOPE, F_TENANT, F_VECTOR, Candidate, FaissIndex, IndexedEntry,
    RediSearchIndex, VectorIndex,
)
from orchestrator.config import SemanticSettings, Settings

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Decision:
    """What the matcher chose among the candidates, and which it refused and why (for metrics and eval)."""

    chosen: Candidate | None
    rejected: tuple[tuple[Candidate, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Screened:
    """One lookup's candidates within reach (nearest first), each with the guard's objections (none: `()`):
    the guard reads each pair once, whether or not the verifier is asked."""

    query: str
    candidates: tuple[tuple[Candidate, tuple[str, ...]], ...]

    def without(self, key: str) -> Screened:
        return Screened(self.query, tuple(row for row in self.candidates if row[0].key != key))


#: Why a candidate the guard let through was refused by the verifier (a reason like the guard's).
VERIFIER_REASON = "verifier"


class SemanticMatcher:
    """The one decision shared by the layer and the eval, over an index's nearest candidates.

    Without the verifier (off, or `scores` None because the call failed): the nearest candidate whose cosine
    reaches `threshold` and that the guard lets through is served. With it, every candidate from the band's
    lower bar (`verifier.min_similarity`) that the guard lets through is scored, and the nearest one served
    whose score reaches the bar for its cosine:
    - from `threshold` up, where cosine alone would serve, the veto bar (`verifier.max_veto_loss` through the
      calibration table, orchestrator.calibration): the verifier only refuses pairs it is confident are
      different questions;
    - in the band below it, τ (`semantic.max_error_rate` through the same table): the verifier must be
      confident they are the same.
    """

    def __init__(self, settings: SemanticSettings) -> None:
        self.threshold = settings.threshold
        self.candidates = settings.candidates
        self.guard = NearMissGuard(settings.guard)
        #: The verifier's bars (τ in the band, the veto above it); None: the verifier is off.
        self.bars: Bars | None = verifier_bars(settings)
        self.floor = settings.threshold if self.bars is None else settings.verifier.min_similarity

    def screen(self, query: str, candidates: Sequence[Candidate]) -> Screened:
        """The candidates the decision can serve (the first `candidates`, from the floor up), guard read."""
        return Screened(query, tuple((c, self.guard.reasons(c.query, query))
                                     for c in candidates[:self.candidates] if c.similarity >= self.floor))

    def to_verify(self, screened: Screened) -> list[Candidate]:
        """The candidates the verifier is asked about (none when it is off, or all fall below the band)."""
        if self.bars is None:
            return []
        return [candidate for candidate, reasons in screened.candidates if not reasons]

    def bar(self, similarity: float) -> float:
        """The verifier score a candidate of this cosine needs (the verifier on)."""
        return self.bars.veto if similarity >= self.threshold else self.bars.band

    def choose(self, screened: Screened, scores: Mapping[str, float] | None = None) -> Decision:
        """`scores`: the verifier's, by candidate key, for to_verify()'s candidates; None: cosine and guard."""
        verified = scores is not None and self.bars is not None
        rejected = []
        for candidate, reasons in screened.candidates:
            if not verified and candidate.similarity < self.threshold:
                break
            if not reasons and verified and scores.get(candidate.key, 0.0) < self.bar(candidate.similarity):
                reasons = (VERIFIER_REASON,)
            if not reasons:
                return Decision(candidate, tuple(rejected))
            rejected.append((candidate, reasons))
        return Decision(None, tuple(rejected))

    def decide(self, query: str, candidates: Sequence[Candidate],
               scores: Mapping[str, float] | None = None) -> Decision:
        """screen() and choose() in one (for callers that score nothing, or already have the scores)."""
        return self.choose(self.screen(query, candidates), scores)


class SemanticCache:
    """Implements orchestrator.cache.types.SemanticLayer over Redis hashes and a VectorIndex.

    Key layout: `<prefix>:sem:{<tenant>}:<sha256(scope digest, query)>` (a hash: tenant, scope, query,
    packed answer (orchestrator.cache.types.pack_answer, as the exact layer stores it), float32 vector,
    expires_at); the same question stored twice in a scope overwrites itself.
    The Redis client must return bytes (decode_responses=False): vectors are binary.

    A lookup in a scope with no entries embeds nothing (on a miss the embedding competes with the engine's
    prefill for CPU); one that embeds leaves the vector on its target, where the store of the same request
    finds it: one embedding per miss, not two.
    """

    def __init__(self, redis: Redis, embedder: Embedder, index: VectorIndex, prefix: str = "llmcache",
                 matcher: SemanticMatcher | None = None, clock=time.time, verifier: PairVerifier | None = None,
                 verifier_timeout_s: float = 1.0) -> None:
        """Without `verifier` every lookup decides on cosine and guard (counted as a fallback when the
        matcher expects the verifier)."""
        self.redis = redis
        self.embedder = embedder
        self.verifier = verifier
        self.verifier_timeout_s = verifier_timeout_s
        self.index = index
        self.prefix = prefix
        self.matcher = matcher or SemanticMatcher(SemanticSettings())
        self.clock = clock

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}:sem:"

    def entry_key(self, scope: Scope, query: str) -> str:
        digest = hashlib.sha256(f"{scope.digest}\0{query}".encode()).hexdigest()
        return f"{self.key_prefix}{{{scope.tenant}}}:{digest}"

    async def _vector(self, target: SemanticTarget) -> np.ndarray:
        """The query's vector: the one on the target, else embedded now (and left on the target)."""
        if target.vector is None:
            (vector,) = await self.embedder.embed([target.query])
            target.vector = np.asarray(vector, dtype=np.float32)
        return target.vector

    async def lookup(self, target: SemanticTarget) -> SemanticHit | None:
        scope = target.scope
        if target.vector is None and not await self.index.has_scope(scope.tenant, scope.digest):
            return None  # nothing stored in this context (e.g. a conversation's later turns): no embedding
        candidates = await self.index.search(scope.tenant, scope.digest, await self._vector(target),
                                             self.matcher.candidates)
        screened = self.matcher.screen(target.query, candidates)
        scores = await self._verify(screened)
        while True:
            decision = self.matcher.choose(screened, scores)
            chosen = decision.chosen
            if chosen is None:
                return None
            packed = chosen.answer
            if packed is None:  # faiss keeps vectors only; the answer is in Redis
                packed = await self.redis.hget(chosen.key, F_ANSWER)
            answer = unpack_answer(packed)
            if answer is not None:
                reasons = tuple(r for _, rs in decision.rejected for r in rs)
                return SemanticHit(answer, chosen.similarity, chosen.query, reasons)
            # gone from Redis (expired, invalidated by another replica) or damaged: forget it, try the rest
            if packed:
                await self.redis.delete(chosen.key)  # damaged: never served, and not looked at again
            await self.index.remove([chosen.key])
            screened = screened.without(chosen.key)

    async def _verify(self, screened: Screened) -> dict[str, float] | None:
        """The verifier's scores of the candidates it decides, by key ({} when none is in the band: no call);
        None when it should decide but cannot (absent, failed, too slow): cosine and guard decide, counted in
        orchestrator_semantic_verifier_fallbacks_total."""
        pending = self.matcher.to_verify(screened)
        if not pending:
            return {}
        if self.verifier is None:
            metrics.SEMANTIC_VERIFIER_FALLBACKS.labels("unavailable").inc()
            return None
        try:
            scores = await asyncio.wait_for(self.verifier.score(screened.query, [c.query for c in pending]),
                                            self.verifier_timeout_s)
        except Exception as error:  # noqa: BLE001 - a verifier failure costs accuracy, never the request
            reason = "timeout" if isinstance(error, TimeoutError) else "error"
            metrics.SEMANTIC_VERIFIER_FALLBACKS.labels(reason).inc()
            log.warning("pair verifier %s (%s: %s); deciding on cosine and guard", reason, type(error).__name__,
                        error)
            return None
        metrics.SEMANTIC_VERIFIER_CALLS.inc()
        return {c.key: float(s) for c, s in zip(pending, scores, strict=True)}

    async def store(self, target: SemanticTarget, answer: CachedAnswer, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        scope, vector = target.scope, await self._vector(target)
        key = self.entry_key(scope, target.query)
        expires_at = self.clock() + ttl_s
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={F_TENANT: scope.tenant, F_SCOPE: scope.digest, F_QUERY: target.query,
                                    F_ANSWER: pack_answer(answer), F_VECTOR: vector.tobytes(),
                                    F_EXPIRES: repr(expires_at)})
            pipe.expire(key, ttl_s)
            await pipe.execute()
        await self.index.add(IndexedEntry(key, scope.tenant, scope.digest, target.query, vector, expires_at))

    async def invalidate_tenant(self, tenant: str) -> int:
        removed = await unlink_matching(self.redis, f"{glob_escape(self.key_prefix)}{{{glob_escape(tenant)}}}:*")
        await self.index.remove_tenant(tenant)
        return removed

    async def invalidate_all(self) -> int:
        removed = await unlink_matching(self.redis, f"{glob_escape(self.key_prefix)}*")
        await self.index.clear()
        return removed


async def build_index(settings: SemanticSettings, redis: Redis, prefix: str) -> VectorIndex:
    """The configured index, ready: RediSearch's created if missing; faiss filled from Redis. Without the
    RediSearch module, "redisearch" falls back to faiss with a warning rather than disabling the layer."""
    key_prefix = f"{prefix}:sem:"
    if settings.index == "redisearch":
        index = RediSearchIndex(redis, key_prefix, EMBEDDING_DIM, hnsw=settings.hnsw)
        try:
            await index.ensure()
            return index
        except ResponseError as error:
            if "unknown command" not in str(error).lower():
                raise
            log.warning("semantic index: Redis has no RediSearch module (%s); using the in-process faiss index",
                        error)
    faiss_index = FaissIndex(EMBEDDING_DIM, hnsw=settings.hnsw)
    loaded = await faiss_index.rebuild(redis, key_prefix)
    log.info("semantic index: faiss rebuilt from Redis with %d entries", loaded)
    return faiss_index


async def build_semantic_layer(settings: Settings, redis: Redis, embedder: Embedder,
                               verifier: PairVerifier | None = None) -> SemanticCache:
    """The layer the service uses, from the orchestrator's Settings (`semantic` and `redis.key_prefix`)."""
    prefix = settings.redis.key_prefix
    index = await build_index(settings.semantic, redis, prefix)
    return SemanticCache(redis, embedder, index, prefix, SemanticMatcher(settings.semantic), verifier=verifier,
                         verifier_timeout_s=settings.semantic.verifier.timeout_s)
