"""Per-API request metrics: count, latency and time to first chunk, labelled by the cache layer that answered.

The service's own metrics (hits, misses, tokens saved, backend TTFT, KV blocks reused) live in
orchestrator.metrics; both register in prometheus-client's default registry, which /metrics exposes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from orchestrator.errors import OrchestratorError

#: From 0.5 ms (an exact hit) to a minute (a long generation).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter("orchestrator_api_requests", "Requests served, by API, endpoint, cache layer and status",
                   ["api", "endpoint", "layer", "status"])
LATENCY = Histogram("orchestrator_api_request_duration_seconds", "Time from request to last byte",
                    ["api", "endpoint", "layer"], buckets=LATENCY_BUCKETS)
FIRST_CHUNK = Histogram("orchestrator_api_time_to_first_chunk_seconds",
                        "Streams: time from request to the first chunk sent", ["api", "endpoint", "layer"],
                        buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("orchestrator_api_requests_in_flight", "Requests being served", ["api"])
#: The `status` label of a request that succeeded or whose caller went away, per API (otherwise the error's
#: HTTP status, or its gRPC code name).
SUCCEEDED = {"http": "200", "grpc": "OK"}
CANCELLED = {"http": "cancelled", "grpc": "CANCELLED"}


def status_label(api: str, error: BaseException | None) -> str:
    """What a request ended with, as the `status` label: success, the error's status (an unexpected error is a
    500 / INTERNAL, as the client sees it), or cancelled."""
    if error is None:
        return SUCCEEDED[api]
    if not isinstance(error, Exception):
        return CANCELLED[api]
    known = error if isinstance(error, OrchestratorError) else OrchestratorError("")
    return str(known.http_status) if api == "http" else known.grpc_code


@dataclass
class RequestObservation:
    """One request's measurements; `layer` stays "none" until the service says where the answer comes from."""

    api: str
    endpoint: str
    layer: str = "none"
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        IN_FLIGHT.labels(self.api).inc()

    def first_chunk(self) -> None:
        FIRST_CHUNK.labels(self.api, self.endpoint, self.layer).observe(time.perf_counter() - self.started)

    @contextlib.contextmanager
    def measured(self, ends_request: bool = True) -> Iterator[RequestObservation]:
        """Finish the observation when the block ends: with the status of an error that escapes it (re-raised),
        else with success, unless `ends_request` is False (a stream that goes on finishes it later)."""
        try:
            yield self
        except BaseException as error:
            self.finish(status_label(self.api, error))
            raise
        if ends_request:
            self.finish(status_label(self.api, None))

    def finish(self, status: str) -> None:
        IN_FLIGHT.labels(self.api).dec()
        REQUESTS.labels(self.api, self.endpoint, self.layer, status).inc()
        LATENCY.labels(self.api, self.endpoint, self.layer).observe(time.perf_counter() - self.started)
