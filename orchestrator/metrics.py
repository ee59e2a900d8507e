"""Prometheus metrics of the service core (the API layer adds its request counters next to these).

All live in prometheus-client's default registry, which the API exposes at /metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CACHE_HITS = Counter("orchestrator_cache_hits_total", "Requests answered from a cache layer", ["layer"])
CACHE_MISSES = Counter("orchestrator_cache_misses_total", "Cache lookups that found nothing (backend called)")
CACHE_BYPASSES = Counter("orchestrator_cache_bypasses_total",
                         "Requests that skipped the cache lookup", ["reason"])
TOKENS_SAVED = Counter("orchestrator_cache_tokens_saved_total",
                       "Prompt + completion tokens the backend did not have to process thanks to a hit",
                       ["layer"])
CACHE_STORES = Counter("orchestrator_cache_stores_total", "Answers stored", ["layer"])
CACHE_STORES_SKIPPED = Counter("orchestrator_cache_stores_skipped_total",
                               "Answers not stored, by reason", ["reason"])
SINGLEFLIGHT_JOINED = Counter("orchestrator_singleflight_joined_total",
                              "Requests that joined an identical in-flight generation instead of calling the "
                              "backend")
REDIS_ERRORS = Counter("orchestrator_redis_errors_total",
                       "Redis operations that failed (the request went on without the cache or the routing table)", ["operation"])
SEMANTIC_ERRORS = Counter("orchestrator_semantic_errors_total",
                          "Semantic-layer operations that failed (the request went on without it)", ["operation"])
SEMANTIC_VERIFIER_CALLS = Counter("orchestrator_semantic_verifier_calls_total",
                                  "Semantic lookups whose in-band candidates the pair verifier scored")
SEMANTIC_VERIFIER_FALLBACKS = Counter("orchestrator_semantic_verifier_fallbacks_total",
                                      "Semantic lookups decided on cosine and guard because the pair verifier "
                                      "was unavailable, failed or timed out", ["reason"])
BACKEND_REQUESTS = Counter("orchestrator_backend_requests_total", "Generations sent to Triton, by outcome",
                           ["outcome"])
BACKEND_ABANDONED = Counter("orchestrator_backend_abandoned_total",
                            "Generations ended early: stopped by request id, or cancelled when that failed",
                            ["outcome"])
BACKEND_TTFT = Histogram("orchestrator_backend_ttft_seconds", "Time from sending a generation to its first token",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
KV_CACHE_REUSED_BLOCKS = Counter("orchestrator_backend_kv_cache_reused_blocks_total",
                                 "KV-cache blocks the engine reused from earlier prompts (kv_cache_reused_blocks)")
# Routing across Triton replicas (orchestrator/backends/replicas.py), labelled by replica url ("host:port"); a
# replica that leaves the set (DNS) loses its series.
TRITON_REPLICA_ROUTED = Counter("orchestrator_triton_replica_routed_total",
                                "Generations routed to a Triton replica, by why it was chosen", ["replica", "route"])
TRITON_REPLICA_IN_FLIGHT = Gauge("orchestrator_triton_replica_in_flight",
                                 "Generations in flight on a Triton replica through this orchestrator", ["replica"])
TRITON_REPLICA_HEALTHY = Gauge("orchestrator_triton_replica_healthy",
                               "1 while a Triton replica is routed to (ready on its last check), else 0", ["replica"])
TRITON_REPLICA_UNAVAILABLE = Counter("orchestrator_triton_replica_unavailable_total",
                                     "Generations that found a Triton replica unreachable (it was then marked down)",
                                     ["replica"])
