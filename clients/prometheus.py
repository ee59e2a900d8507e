"""Reading a server's Prometheus endpoint: the orchestrator's counters, for clients and benchmarks that check
what a run did (cache hits, routes, verifier calls) from the server's own account."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


class MetricsUnavailable(RuntimeError):
    """The endpoint could not be read."""


def scrape(base_url: str, timeout_s: float = 5.0) -> list[Sample]:
    """Every sample on `<base_url>/metrics`."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/metrics", timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as error:
        raise MetricsUnavailable(f"{base_url}/metrics: {error}") from error
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` (e.g. "orchestrator_cache_hits_total") whose labels include
    `labels`."""
    return sum(sample.value for sample in samples
               if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()))
