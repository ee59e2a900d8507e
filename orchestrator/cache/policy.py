"""What the cache may do for one request: configuration + the request's own controls → a plan.

Sampled requests (temperature > 0) follow `cache.sampled_requests`: "bypass" leaves them out entirely (no
lookup, no store, no sharing of an in-flight generation: each caller gets its own sample), "seeded" treats
those with a seed as reproducible and caches them, "cache" caches them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config import CacheSettings
from orchestrator.schemas import CacheControls, GenerationRequest


@dataclass(frozen=True)
class CachePlan:
    lookup: bool  # answer from the cache if possible
    store: bool  # store a fresh, complete answer
    share: bool  # join an identical in-flight generation
    namespace: str
    ttl_s: int
    bypass_reason: str | None = None  # why `lookup` is off


def cacheable(request: GenerationRequest, settings: CacheSettings) -> bool:
    """Whether the answer is a function of the request (greedy, or sampled in a way the policy accepts)."""
    if request.params.greedy or settings.sampled_requests == "cache":
        return True
    return settings.sampled_requests == "seeded" and request.params.seed is not None


def plan(request: GenerationRequest, controls: CacheControls, settings: CacheSettings) -> CachePlan:
    namespace = controls.namespace or settings.namespace
    ttl_s = min(controls.ttl_s or settings.ttl_s, settings.max_ttl_s)
    if not settings.enabled:
        return CachePlan(False, False, False, namespace, ttl_s, "disabled")
    if not cacheable(request, settings):
        return CachePlan(False, False, False, namespace, ttl_s, "sampled")
    return CachePlan(lookup=not controls.no_cache, store=not controls.no_store, share=True, namespace=namespace,
                     ttl_s=ttl_s, bypass_reason="no_cache" if controls.no_cache else None)


def storable(finish_reason: str, settings: CacheSettings) -> bool:
    """A complete answer may be stored; one cut by max_tokens only when configured."""
    return finish_reason == "stop" or (finish_reason == "length" and settings.store_truncated)
