"""Soak: a fixed-rate mixed workload through the orchestrator for a bounded time, on loopback, stopping by
itself. Reports throughput, latency percentiles, errors, the RSS of every process of the stack at start and
end, and Redis memory under `maxmemory` + allkeys-lru.

    .venv/bin/python scripts/bench/soak.py --duration 300 --rate 4 --json      # full: own Valkey + Triton
    .venv/bin/python scripts/bench/soak.py --triton-url 127.0.0.1:8001 ...      # on a running Triton

The last stdout line is the result as one JSON object (with --json)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from clients.load import Plan, run_load  # noqa: E402
from clients.targets import OrchestratorHttpTarget  # noqa: E402
from clients.workload import workload  # noqa: E402
from orchestrator.config import ModelSettings  # noqa: E402
from stack.orchestrator_process import OrchestratorProcess  # noqa: E402
from stack.render import render  # noqa: E402
from stack.triton import TritonServer  # noqa: E402
from stack.valkey import ValkeyServer  # noqa: E402
from tests.reliability.stack_probe import descendants, listener_pid, rss_kib  # noqa: E402

KEY = "sk-soak"
LLM_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls", "embedding")


def rss_mib(port: int) -> float:
    """RSS of the server on `port` and its children (Triton's Python stubs), MiB."""
    return round(sum(rss_kib(pid) for pid in descendants(listener_pid(port))) / 1024, 1)


def run(args: argparse.Namespace) -> dict:
    with contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        valkey = stack.enter_context(ValkeyServer(maxmemory=args.maxmemory, log_path=logs / "valkey.log"))
        triton_url = args.triton_url
        if triton_url is None:
            repository = render("cpu", logs / "repository")
            triton = stack.enter_context(TritonServer(repository, model_control_mode="explicit",
                                                      load_models=LLM_MODELS, log_path=logs / "triton.log"))
            triton_url = triton.grpc_url
        env = {"ORCH_API__KEYS": json.dumps({KEY: "soak"}), "ORCH_CACHE__STORE_TRUNCATED": "true",
               "ORCH_REDIS__KEY_PREFIX": f"soak-{uuid.uuid4().hex[:8]}"}
        orchestrator = stack.enter_context(OrchestratorProcess(triton_url, valkey.url, env=env,
                                                               log_path=logs / "orchestrator.log"))
        ports = {"orchestrator": orchestrator.http_port, "valkey": valkey.port,
                 "triton": int(triton_url.rsplit(":", 1)[1])}
        samples: list[dict] = []
        done = threading.Event()

        def sample() -> None:
            while True:
                samples.append({name: rss_mib(port) for name, port in ports.items()})
                if done.wait(args.sample_s):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        async def drive() -> dict:
            target = OrchestratorHttpTarget(orchestrator.http_url, ModelSettings().name, args.max_tokens, KEY)
            await target.open()
            try:
                summary = await run_load(target, workload(args.mix, seed=args.seed),
                                         Plan(rate=args.rate, duration_s=args.duration), seed=args.seed)
            finally:
                await target.close()
            return summary.to_dict()

        try:
            result = asyncio.run(drive())
        finally:
            done.set()
            sampler.join()
        memory = redis.Redis.from_url(valkey.url).info()
        result["rss_mib"] = {name: {"start": samples[0][name], "end": samples[-1][name],
                                    "max": max(s[name] for s in samples)} for name in ports}
        result["redis"] = {"maxmemory": memory["maxmemory"], "maxmemory_policy": memory["maxmemory_policy"],
                           "used_memory": memory["used_memory"], "used_memory_peak": memory["used_memory_peak"],
                           "evicted_keys": memory["evicted_keys"], "keys": sum(
                               v["keys"] for k, v in memory.items() if k.startswith("db") and isinstance(v, dict))}
        result["config"] = {"rate": args.rate, "duration_s": args.duration, "mix": args.mix,
                            "max_tokens": args.max_tokens, "maxmemory": args.maxmemory}
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=4.0, help="open loop: Poisson arrivals per second")
    parser.add_argument("--mix", default="exact=0.4,paraphrase=0.2,fresh=0.3,shared_prefix=0.1")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--maxmemory", default="16mb", help="Valkey maxmemory (allkeys-lru)")
    parser.add_argument("--triton-url", help="use this Triton (gRPC host:port) instead of starting one")
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    result = run(parser.parse_args())
    print(json.dumps(result) if "--json" in sys.argv else json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
