"""The soak (scripts/bench/soak.py) in short form on the session's Triton: a fixed-rate mixed workload with
no failed request, bounded RSS growth of every process, and Redis held under maxmemory with LRU.
RELIABILITY_FULL=1 runs the full 5 minutes (docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stack.triton import TritonServer
from tests.reliability.conftest import FULL

pytestmark = pytest.mark.integration

SOAK = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "soak.py"
DURATION_S = 300 if FULL else 40


def test_soak_fixed_rate_mixed_workload(triton: TritonServer) -> None:
    completed = subprocess.run(
        [sys.executable, str(SOAK), "--duration", str(DURATION_S), "--rate", "1", "--mix", "exact=0.6,paraphrase=0.2,fresh=0.2", "--maxmemory", "8mb",
         "--triton-url", triton.grpc_url, "--json"],
        capture_output=True, text=True, timeout=DURATION_S + 240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"RELIABILITY {json.dumps({'test': 'soak', **result})}")
    assert result["requests"] > 0 and result["errors"] == {}, result
    for name, rss in result["rss_mib"].items():
        assert rss["end"] - rss["start"] < 300, (name, rss)
    redis = result["redis"]
    assert redis["maxmemory_policy"] == "allkeys-lru" and redis["used_memory"] <= redis["maxmemory"]
