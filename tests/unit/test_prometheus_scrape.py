"""clients.prometheus: a server's counters summed by name and labels, and a clear error when unreadable."""

from __future__ import annotations

import http.server
import threading

import pytest

from clients.prometheus import MetricsUnavailable, scrape, total
from stack.ports import free_port

EXPOSITION = b"""# HELP orchestrator_cache_hits_total Hits
# TYPE orchestrator_cache_hits_total counter
orchestrator_cache_hits_total{layer="exact",api="http"} 3.0
orchestrator_cache_hits_total{layer="exact",api="grpc"} 2.0
orchestrator_cache_hits_total{layer="semantic",api="http"} 4.0
# HELP orchestrator_backend_ttft_seconds TTFT
# TYPE orchestrator_backend_ttft_seconds histogram
orchestrator_backend_ttft_seconds_bucket{le="+Inf"} 2.0
orchestrator_backend_ttft_seconds_count 2.0
orchestrator_backend_ttft_seconds_sum 0.5
"""


class Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/metrics" else 404)
        self.end_headers()
        self.wfile.write(EXPOSITION)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()


def test_samples_are_summed_by_name_and_labels(server) -> None:
    samples = scrape(server)
    assert total(samples, "orchestrator_cache_hits_total") == 9
    assert total(samples, "orchestrator_cache_hits_total", layer="exact") == 5
    assert total(samples, "orchestrator_cache_hits_total", layer="exact", api="grpc") == 2
    assert total(samples, "orchestrator_cache_hits_total", layer="bypass") == 0
    assert (total(samples, "orchestrator_backend_ttft_seconds_sum"),
            total(samples, "orchestrator_backend_ttft_seconds_count")) == (0.5, 2)


def test_an_unreachable_endpoint_is_a_clear_error() -> None:
    with pytest.raises(MetricsUnavailable, match="/metrics"):
        scrape(f"http://127.0.0.1:{free_port()}", timeout_s=2)
