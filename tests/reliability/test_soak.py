"""The soak (scripts/bench/soak.py) on the session's Triton: a fixed-rate mixed workload with no failed request,
bounded RSS growth of every process, and Redis held under maxmemory with LRU. Every run has the short smoke
(the whole path, a few requests); RELIABILITY_FULL=1 adds the full 5 minutes (docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.triton import TritonServer
from tests.reliability.conftest import FULL, report

pytestmark = pytest.mark.integration

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "soak.py"
SMOKE_S = 6
FULL_S = 300


def soak(triton: TritonServer, duration_s: int) -> dict:
    completed = subprocess.run(
        [sys.executable, str(SOAK), "--duration", str(duration_s), "--rate", "1",
         "--mix", "exact=0.6,paraphrase=0.2,fresh=0.2", "--maxmemory", "8mb", "--triton-url", triton.grpc_url,
         "--json"], capture_output=True, text=True, timeout=duration_s + 240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    report("soak", **result)
    assert result["requests"] > 0 and result["errors"] == {}, result
    for name, rss in result["rss_mib"].items():
        assert rss["end"] - rss["start"] < 300, (name, rss)
    redis = result["redis"]
    assert redis["maxmemory_policy"] == "allkeys-lru" and redis["used_memory"] <= redis["maxmemory"]
    return result


def test_soak_smoke(triton: TritonServer) -> None:
    soak(triton, SMOKE_S)


@pytest.mark.skipif(not FULL, reason="the 5-minute soak runs with RELIABILITY_FULL=1")
def test_soak_fixed_rate_mixed_workload(triton: TritonServer) -> None:
    soak(triton, FULL_S)
