"""Cancellation stress: a closed-loop mixed workload (repeats, paraphrases, fresh questions) through the
orchestrator with speculative generation on and off, each on its own fresh Triton (CPU profile) and Valkey.

With `cache.speculative_generation` every semantic hit abandons a `tensorrt_llm_bls` generation that has just
started. The orchestrator ends it with upstream's `stop` request by request id and reads the stream to its
end (a gRPC cancellation only if that fails; both counted from the orchestrator's metrics). This shows what
Triton does under a steady stream of abandoned generations: whether it survives (its log has no fatal signal,
the process is alive) and how many requests failed.

    .venv/bin/python scripts/bench/cancellation_stress.py --duration 40 --concurrency 4

The last stdout line is one JSON object with both runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from clients.load import Plan, run_load  # noqa: E402
from clients.targets import OrchestratorHttpTarget  # noqa: E402
from clients.workload import workload  # noqa: E402
from orchestrator.config import ModelSettings  # noqa: E402
from stack.orchestrator_process import OrchestratorProcess  # noqa: E402
from stack.render import render  # noqa: E402
from stack.triton import TritonServer  # noqa: E402
from stack.valkey import ValkeyServer  # noqa: E402

FATAL = re.compile(r"Signal \((?:11|6)\) received|malloc\(\)[^\n]*|corrupted[^\n]*")
ABANDONED = re.compile(r'^orchestrator_backend_abandoned_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)


def abandoned(http_url: str) -> dict[str, int]:
    """Generations the orchestrator ended early, by how: "stopped" (by request id) or "cancelled"."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=10) as response:
        return {outcome: int(float(value)) for outcome, value in ABANDONED.findall(response.read().decode())}


async def drive(url: str, duration_s: float, concurrency: int) -> dict:
    target = OrchestratorHttpTarget(url, ModelSettings().name, max_tokens=4, timeout_s=60)
    await target.open()
    try:
        summary = await run_load(target, workload("exact=0.5,paraphrase=0.2,fresh=0.3", seed=7),
                                 Plan(concurrency=concurrency, duration_s=duration_s))
    finally:
        await target.close()
    return summary.to_dict()


def run(speculative: bool, duration_s: float, concurrency: int, scratch: Path) -> dict:
    log = scratch / f"triton-speculative-{speculative}.log"
    env = {"ORCH_CACHE__SPECULATIVE_GENERATION": str(speculative).lower(), "ORCH_CACHE__STORE_TRUNCATED": "true"}
    with ValkeyServer() as valkey, TritonServer(render("cpu", scratch / f"repo-{speculative}"), log_path=log) as triton, \
            OrchestratorProcess(triton.grpc_url, valkey.url, env=env) as orchestrator:
        summary = asyncio.run(drive(orchestrator.http_url, duration_s, concurrency))
        ended_early = abandoned(orchestrator.http_url)
        alive = triton.running()
    fatal = sorted(set(FATAL.findall(log.read_text())))
    return {"speculative": speculative, "requests": summary["requests"], "ok": summary["ok"],
            "errors": summary["errors"], "hit_rate": summary["hit_rate"], "abandoned": ended_early,
            "triton_alive": alive,
            "triton_fatal_signals": fatal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load per run")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cancel-stress-") as scratch:
        runs = [run(speculative, args.duration, args.concurrency, Path(scratch)) for speculative in (False, True)]
    for result in runs:
        print(f"speculative={result['speculative']}: {result['ok']}/{result['requests']} ok, errors "
              f"{result['errors']}, abandoned {result['abandoned']}, Triton alive {result['triton_alive']}, fatal {result['triton_fatal_signals']}")
    print(json.dumps({"bench": "cancellation_stress", "duration_s": args.duration,
                      "concurrency": args.concurrency, "runs": runs}))


if __name__ == "__main__":
    main()
