"""Cache administration (admin keys only, over both APIs): statistics and invalidation."""

from __future__ import annotations

from orchestrator.cache.exact import ExactCache
from orchestrator.cache.semantic_stage import SemanticStage
from orchestrator.validation import validate_name


async def stats(exact: ExactCache, tenant: str | None, in_flight: int) -> dict:
    """Hits by layer, misses, tokens saved, hit rate and stored exact entries, for one tenant or all;
    `in_flight`: generations running now."""
    if tenant is not None:
        validate_name("tenant", tenant)
    counters = await exact.stats(tenant)
    hits = counters["exact_hits"] + counters["semantic_hits"]
    lookups = hits + counters["misses"]
    return {"tenant": tenant, **counters, "hit_rate": hits / lookups if lookups else 0.0,
            "exact_entries": await exact.count_entries(tenant), "in_flight": in_flight}


async def invalidate(exact: ExactCache, semantic: SemanticStage, tenant: str | None = None, key: str | None = None,
                     namespace: str | None = None) -> int:
    """Delete matching exact entries; semantic entries go with a tenant-wide or global invalidation (the
    semantic index knows scopes, not namespaces or keys). Returns how many entries were deleted."""
    if tenant is not None:
        validate_name("tenant", tenant)
    if namespace is not None:
        validate_name("namespace", namespace)
    removed = await exact.invalidate(tenant, namespace, key)
    if key is None and namespace is None:
        removed += await semantic.invalidate(tenant)
    return removed
