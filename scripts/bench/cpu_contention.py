"""CPU contention: how the LLM engine holds up when another process takes one core.

Two measurements, each idle and then with one competing busy core (a bounded busy-loop process this script
starts and stops), on the same seeded prompts:

- engine alone: the CPU engine in-process (cpu_engine.LlamaEngine), 4 concurrent streams of 64 tokens, for
  each llama.cpp setting given (decode threads, prompt-batch threads, poll level); libgomp's spin count
  (cpu_engine.openmp) is one per process, `--engine-spin-count`;
- through the service: Valkey + Triton (CPU profile, as rendered or with the engine set as given, spin count
  included: each variant has its own Triton) + `python -m orchestrator serve`, 4 concurrent streaming chat
  requests (~100-word prompts, `--service-tokens` tokens, `Cache-Control: no-store`) with httpx.

`contended_over_idle` is tokens/s with one busy core over tokens/s idle (0.5 is ideal on 2 cores); the
top-level figure is the service with the profile as rendered (the first service variant, `profile`), each
variant's is beside it. Variants are interleaved round by round, so drift hits them alike. Needs an otherwise
idle machine. Prints one JSON line.

    .venv/bin/python scripts/bench/cpu_contention.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cpu_engine import tokenizer  # noqa: E402
from cpu_engine.config import DEFAULT_SPIN_COUNT, EngineConfig  # noqa: E402
from cpu_engine.engine import LlamaEngine  # noqa: E402
from cpu_engine.requests import GenerationRequest  # noqa: E402
from model_assets import llm  # noqa: E402
from model_assets.chat import format_chat  # noqa: E402
from stack.orchestrator_process import OrchestratorProcess  # noqa: E402
from stack.render import profile_variant, render  # noqa: E402
from stack.triton import TritonServer  # noqa: E402
from stack.valkey import ValkeyServer  # noqa: E402

STREAMS = 4
TOPICS = ["rivers", "volcanoes", "libraries", "bridges", "glaciers", "harbours", "deserts", "forests",
          "railways", "lighthouses", "markets", "observatories"]


def prompts(seed: int) -> Iterator[str]:
    """~100-word questions, each new (no shared prefix beyond the chat header), in a fixed order."""
    rng = np.random.default_rng(seed)
    words = "the of a in to and history people city water stone light time early old new long".split()
    while True:
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        filler = " ".join(rng.choice(words, 90))
        yield f"Tell me about {topic} ({int(rng.integers(10**6))}). Context: {filler}. Answer briefly."


@contextlib.contextmanager
def busy_core(enabled: bool, limit_s: float = 600.0) -> Iterator[None]:
    """One process spinning on a core for as long as the block runs (bounded by limit_s)."""
    if not enabled:
        yield
        return
    spin = subprocess.Popen([sys.executable, "-c",
                             f"import time\nend = time.time() + {limit_s}\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.2)
        yield
    finally:
        spin.kill()
        spin.wait()


def engine_run(engine: LlamaEngine, texts: list[str], vocabulary, max_tokens: int) -> dict:
    """STREAMS concurrent generations; aggregate tokens/s and median time to first token."""
    firsts: list[float] = []
    counts: list[int] = []
    start = time.perf_counter()

    def one(text: str) -> None:
        ids = tokenizer.encode(vocabulary, format_chat([{"role": "user", "content": text}]))
        request = GenerationRequest.from_inputs({
            "input_ids": np.array([ids], dtype=np.int32), "request_output_len": np.array([[max_tokens]]),
            "end_id": np.array([[-1]]), "streaming": np.array([[True]])})
        first: list[float] = []

        def progress(_step) -> None:
            if not first:
                first.append(time.perf_counter() - start)

        outcome = engine.generate(request, progress, lambda: False, time.time_ns())
        firsts.append(first[0] if first else float("nan"))
        counts.append(len(outcome.output_ids))

    threads = [threading.Thread(target=one, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"tok_s": sum(counts) / wall, "ttft_s": statistics.median(firsts)}


def engine_config(threads: int, batch_threads: int, poll: int, spin_count: int) -> EngineConfig:
    return EngineConfig.from_model_config(
        {"max_batch_size": STREAMS, "parameters": {
            "cpu_threads": {"string_value": str(threads)}, "cpu_threads_batch": {"string_value": str(batch_threads)},
            "cpu_poll": {"string_value": str(poll)}, "cpu_spin_count": {"string_value": str(spin_count)},
            "enable_kv_cache_reuse": {"string_value": "false"},
            "max_tokens_in_paged_kv_cache": {"string_value": str(STREAMS * 1024)}}},
        default_model_path=str(llm.gguf_path()))


def measure_engine(variants: list[Variant], spin_count: int, rounds: int, max_tokens: int) -> dict:
    vocabulary = tokenizer.load()
    if None in variants:
        raise SystemExit("--engine-variants: give threads/batch_threads/poll for each (no `profile` here)")
    engines = {variant: LlamaEngine(engine_config(*variant[:3], spin_count),
                                    lambda t: tokenizer.encode(vocabulary, t)) for variant in variants}
    texts = prompts(seed=1)
    results: dict[str, dict[str, list]] = {}
    for _ in range(rounds):
        for contended in (False, True):
            for variant, engine in engines.items():
                with busy_core(contended):
                    run = engine_run(engine, [next(texts) for _ in range(STREAMS)], vocabulary, max_tokens)
                entry = results.setdefault(label(variant), {"idle": [], "contended": []})
                entry["contended" if contended else "idle"].append(run)
    for engine in engines.values():
        engine.close()
    return summarize(results)


#: (threads, batch_threads, poll[, spin_count]); None: the profile as rendered.
Variant = tuple[int, ...] | None
PARAMETERS = ("cpu_threads", "cpu_threads_batch", "cpu_poll", "cpu_spin_count")


def label(variant: Variant) -> str:
    if variant is None:
        return "profile"
    names = ("threads", "batch_threads", "poll", "spin")
    return ",".join(f"{name}={value}" for name, value in zip(names, variant))


def summarize(results: dict[str, dict[str, list]]) -> dict:
    out = {}
    for name, runs in results.items():
        idle = statistics.median(r["tok_s"] for r in runs["idle"])
        contended = statistics.median(r["tok_s"] for r in runs["contended"])
        out[name] = {"idle_tok_s": round(idle, 1), "contended_tok_s": round(contended, 1),
                     "contended_over_idle": round(contended / idle, 3),
                     "idle_ttft_p50_s": round(statistics.median(r["ttft_s"] for r in runs["idle"]), 3),
                     "contended_ttft_p50_s": round(statistics.median(r["ttft_s"] for r in runs["contended"]), 3)}
    return out


async def service_run(url: str, texts: list[str], max_tokens: int) -> dict:
    """STREAMS concurrent streaming chat requests; completion tokens/s from the usage the service reports."""
    start = time.perf_counter()
    firsts: list[float] = []
    tokens: list[int] = []

    async def one(client: httpx.AsyncClient, text: str) -> None:
        body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        first = None
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                 headers={"cache-control": "no-store", "authorization": "Bearer sk-bench"}) as reply:
            reply.raise_for_status()
            async for line in reply.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - start
                if chunk.get("usage"):
                    tokens.append(chunk["usage"]["completion_tokens"])
        firsts.append(first if first is not None else float("nan"))

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(one(client, text) for text in texts))
    wall = time.perf_counter() - start
    return {"tok_s": sum(tokens) / wall, "ttft_s": statistics.median(firsts)}


def variant_repository(variant: Variant, scratch: Path) -> Path:
    """The CPU profile rendered as it is (`profile`) or with the variant's engine parameters."""
    name = label(variant).replace(",", "_").replace("=", "-")
    if variant is None:
        return render("cpu", scratch / name)
    profile = profile_variant("cpu", {"tensorrt_llm": dict(zip(PARAMETERS, variant))}, scratch / f"{name}.toml")
    return render(str(profile), scratch / name)


def measure_service(variants: list[Variant], rounds: int, max_tokens: int, scratch: Path) -> dict:
    texts = prompts(seed=2)
    results: dict[str, dict[str, list]] = {}
    env = {"ORCH_API__KEYS": json.dumps({"sk-bench": {"tenant": "bench"}})}
    with ValkeyServer() as valkey:
        for variant in variants:
            repository = variant_repository(variant, scratch)
            with TritonServer(repository, log_path=scratch / "triton.log") as triton, \
                    OrchestratorProcess(triton.grpc_url, valkey.url, env=env) as orchestrator:
                asyncio.run(service_run(orchestrator.http_url, [next(texts)], max_tokens))  # warm-up
                for _ in range(rounds):
                    for contended in (False, True):
                        with busy_core(contended):
                            run = asyncio.run(service_run(orchestrator.http_url,
                                                          [next(texts) for _ in range(STREAMS)], max_tokens))
                        entry = results.setdefault(label(variant), {"idle": [], "contended": []})
                        entry["contended" if contended else "idle"].append(run)
    return summarize(results)


def parse_variants(text: str) -> list[Variant]:
    """"profile,2/2/50/300000,1/1/0" → [None, (threads, batch_threads, poll, spin_count), (1, 1, 0)]."""
    return [None if item == "profile" else tuple(int(part) for part in item.split("/")) for item in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-variants", default="2/2/50,2/2/0,1/1/0",
                        help="threads/batch_threads/poll, comma-separated, for the engine alone")
    parser.add_argument("--engine-spin-count", type=int, default=DEFAULT_SPIN_COUNT,
                        help="libgomp's spin count for every engine-alone variant (one per process)")
    parser.add_argument("--service-variants", default="profile,2/2/50/300000,1/1/0/0",
                        help="`profile` (as rendered) or threads/batch_threads/poll[/spin_count], comma-separated, "
                             "through the service; the first gives the top-level contended_over_idle")
    parser.add_argument("--service-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--part", choices=("engine", "service", "both"), default="both")
    args = parser.parse_args()
    result: dict = {"bench": "cpu_contention", "cores": os.cpu_count(), "streams": STREAMS,
                    "load_average_start": round(os.getloadavg()[0], 2)}
    if args.part in ("engine", "both"):
        result["engine_spin_count"] = args.engine_spin_count
        result["engine"] = measure_engine(parse_variants(args.engine_variants), args.engine_spin_count, args.rounds,
                                          64)
    if args.part in ("service", "both"):
        variants = parse_variants(args.service_variants)
        with tempfile.TemporaryDirectory(prefix="cpu-contention-") as scratch:
            result["service"] = measure_service(variants, args.rounds, args.service_tokens, Path(scratch))
        result["service_tokens"] = args.service_tokens
        result["contended_over_idle"] = result["service"][label(variants[0])]["contended_over_idle"]
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    for part in ("engine", "service"):
        for name, row in result.get(part, {}).items():
            print(f"{part:8} {name:36} idle {row['idle_tok_s']:6.1f} tok/s  contended {row['contended_tok_s']:6.1f} "
                  f"tok/s  ratio {row['contended_over_idle']:.3f}  TTFT p50 {row['idle_ttft_p50_s']:.2f} → "
                  f"{row['contended_ttft_p50_s']:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
