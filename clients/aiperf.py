"""The cache measured by NVIDIA's aiperf: input files that mix exact repeats, paraphrases and new questions, a
warmed cache, and aiperf's own metrics per mix, with the cache used and bypassed.

Why aiperf: it is the client Triton users reach for, so its TTFT / inter-token latency / throughput are figures
they can compare with their own. The prompts come from data/semantic/gptcache_mock_data.json (pairs of an
original sentence and its paraphrase): originals are sent once before the benchmark (the warm-up stores their
answers), so in a file a repeated original is an exact hit, its paraphrase a semantic hit, and an original
never sent a miss. Every file uses its own pairs, so no file's new questions or paraphrases are stored answers
for another; the bypass mode sends the same files again with a header that turns the cache off.

Bypass header: `Cache-Control: no-cache, no-store`. `no-store` alone only keeps a fresh answer out of the
cache; the orchestrator still answers from it (HTTP's meaning, orchestrator/cache/policy.py), so the warmed
entries would still hit. `no-cache` is what skips the lookup.

aiperf is run as lean as its options allow: one worker, one record processor, no UI. It still starts several
processes and spins a timing loop, which costs the server CPU on a small machine; all mixes and modes run
under the same cost, so compare them within one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import subprocess
import time
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clients.prometheus import MetricsUnavailable, scrape, total
from stack import paths

PAIRS_FILE = paths.SEMANTIC_DATA_DIR / "gptcache_mock_data.json"
BYPASS_HEADER = "no-cache, no-store"
#: aiperf's summary metric (profile_export_aiperf.json) → our column, and the statistic we read.
METRICS = {"time_to_first_token": ("ttft_ms", "avg"), "inter_token_latency": ("itl_ms", "avg"),
           "request_throughput": ("requests_per_s", "avg"), "output_token_throughput": ("output_tok_s", "avg")}


@dataclass(frozen=True)
class MixFile:
    """One aiperf input file: its share answerable from the cache and what it holds."""

    cached_share: float
    path: Path
    exact: int
    paraphrase: int
    new: int


def load_pairs(path: Path = PAIRS_FILE) -> list[tuple[str, str]]:
    return [(pair["origin"], pair["similar"]) for pair in json.loads(path.read_text())]


def build_mixes(pairs: list[tuple[str, str]], shares: list[float], requests: int, out_dir: Path,
                seed: int = 0) -> tuple[list[str], list[MixFile]]:
    """Write one single-turn JSONL file per share (the answerable part split evenly between exact repeats and
    paraphrases, the rest new questions), each from its own pairs; returns the originals to warm and the files."""
    shuffled = pairs[:]
    random.Random(seed).shuffle(shuffled)
    needed = requests * len(shares)
    if needed > len(shuffled):
        raise ValueError(f"{requests} requests x {len(shares)} mixes need {needed} pairs; {len(shuffled)} exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    warm: list[str] = []
    files = []
    for index, share in enumerate(shares):
        own = shuffled[index * requests:(index + 1) * requests]
        cached = round(share * requests)
        exact = cached // 2
        paraphrase = cached - exact
        texts = ([origin for origin, _ in own[:exact]] + [similar for _, similar in own[exact:cached]]
                 + [origin for origin, _ in own[cached:]])
        warm += [origin for origin, _ in own[:cached]]
        random.Random(seed + index).shuffle(texts)
        path = out_dir / f"mix-{round(share * 100):02d}.jsonl"
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
        files.append(MixFile(share, path, exact, paraphrase, requests - cached))
    return warm, files


async def warm_cache(url: str, model: str, api_key: str, texts: list[str], max_tokens: int,
                     concurrency: int = 4) -> dict[str, int]:
    """Send each original once (as aiperf will: one user message, the same max_tokens); counts the layers that
    answered, so a warm-up that found them already cached is visible."""
    import openai

    from clients.chat import chat_turn

    client = openai.AsyncOpenAI(base_url=url.rstrip("/") + "/v1", api_key=api_key, max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    layers: dict[str, int] = {}

    async def one(text: str) -> None:
        async with gate:
            reply = await chat_turn(client, model, [{"role": "user", "content": text}], max_tokens, lambda _: None)
        layers[reply.layer] = layers.get(reply.layer, 0) + 1

    try:
        await asyncio.gather(*(one(text) for text in texts))
    finally:
        await client.close()
    return layers


def aiperf_command(url: str, model: str, api_key: str | None, input_file: Path, requests: int, concurrency: int,
                   max_tokens: int, tokenizer: str, artifact_dir: Path, header: str | None) -> list[str]:
    """`aiperf profile` on one input file, streaming chat; lean: one worker and one record processor, no UI, no
    scraping of the server's metrics or GPU telemetry, summary files only."""
    command = [sys.executable, "-m", "aiperf", "profile", "--url", url, "--model", model,
               "--endpoint-type", "chat", "--streaming", "--input-file", str(input_file),
               "--custom-dataset-type", "single_turn", "--dataset-sampling-strategy", "sequential",
               "--request-count", str(requests), "--concurrency", str(concurrency), "--osl", str(max_tokens),
               "--tokenizer", tokenizer, "--use-server-token-count", "--workers-max", "1",
               "--record-processors", "1", "--ui", "none", "--no-server-metrics", "--no-gpu-telemetry",
               "--export-level", "summary", "--random-seed", "0",
               "--output-artifact-dir", str(artifact_dir)]
    if api_key:
        command += ["--api-key", api_key]
    if header:
        command += ["--header", json.dumps({"Cache-Control": header})]
    return command


def read_summary(artifact_dir: Path) -> dict[str, float | None]:
    """aiperf's own figures from the summary it exports (profile_export_aiperf.json)."""
    found = sorted(artifact_dir.rglob("profile_export_aiperf.json"))
    if not found:
        raise FileNotFoundError(f"no profile_export_aiperf.json under {artifact_dir}")
    data = json.loads(found[-1].read_text())
    records = data.get("records", data)
    summary: dict[str, float | None] = {}
    for metric, (column, statistic) in METRICS.items():
        entry = records.get(metric)
        value = entry.get(statistic) if isinstance(entry, dict) else None
        summary[column] = round(float(value), 2) if value is not None else None
    errors = records.get("error_request_count")  # present only when some request failed
    summary["errors"] = int(errors.get("avg", 0)) if isinstance(errors, dict) else 0
    return summary


def run_aiperf(command: list[str], log_path: Path) -> float:
    """Run aiperf to its end; returns the share of one core its processes used over the run (what it takes
    from a server on the same machine)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    with log_path.open("w") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - began
    if completed.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"aiperf exited with {completed.returncode} (log {log_path}):\n{tail}")
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(100 * used / wall, 1)


def cache_counters(url: str) -> dict[str, float] | None:
    """The orchestrator's own hit and miss counters (Prometheus /metrics), to check that each file hit the cache
    as designed; None where the deployment does not expose them."""
    try:
        samples = scrape(url)
    except MetricsUnavailable:
        return None
    counts = {layer: total(samples, "orchestrator_cache_hits_total", layer=layer) for layer in ("exact", "semantic")}
    counts["miss"] = total(samples, "orchestrator_cache_misses_total")
    counts["bypass"] = total(samples, "orchestrator_cache_bypasses_total")
    return counts


def counted(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {layer: int(after[layer] - before[layer]) for layer in after}


def local_tokenizer() -> str:
    """The served model's tokenizer folder when this checkout has it (aiperf counts tokens with it), else
    aiperf's built-in one."""
    from model_assets import llm

    try:
        folder = llm.tokenizer_dir()
    except Exception:  # noqa: BLE001 - not set up here: fall back
        return "builtin"
    return str(folder) if (Path(folder) / "tokenizer.json").exists() else "builtin"


@contextlib.contextmanager
def local_stack(log_dir: Path) -> Iterator[str]:
    """Throwaway Valkey + Triton (CPU profile) + the orchestrator on free loopback ports; yields its HTTP URL."""
    from stack.orchestrator_process import OrchestratorProcess
    from stack.render import render
    from stack.triton import TritonServer
    from stack.valkey import ValkeyServer

    repository = render("cpu", log_dir / "repository")
    with ValkeyServer(log_path=log_dir / "valkey.log") as valkey, \
            TritonServer(repository, log_path=log_dir / "triton.log") as triton, \
            OrchestratorProcess(triton.grpc_url, valkey.url, log_path=log_dir / "orchestrator.log") as orchestrator:
        yield orchestrator.http_url


def benchmark(url: str, model: str, api_key: str | None, shares: list[float], requests: int, concurrency: int,
              max_tokens: int, tokenizer: str, work_dir: Path, say: Callable[[str], None], seed: int = 0) -> dict:
    """Build the files, warm the cache, run aiperf per mix with the cache and then bypassing it."""
    warm, files = build_mixes(load_pairs(), shares, requests, work_dir / "inputs", seed)
    say(f"warming the cache with {len(warm)} originals ...")
    layers = asyncio.run(warm_cache(url, model, api_key or "none", warm, max_tokens))
    rows = []
    for mode, header in (("cache", None), ("bypass", BYPASS_HEADER)):
        for mix in files:
            name = f"{mode}-{mix.path.stem}"
            say(f"aiperf: {name} ({mix.exact} exact, {mix.paraphrase} paraphrase, {mix.new} new) ...")
            artifacts = work_dir / "artifacts" / name
            before = cache_counters(url)
            command = aiperf_command(url, model, api_key, mix.path, requests, concurrency, max_tokens, tokenizer,
                                     artifacts, header)
            aiperf_cpu = run_aiperf(command, work_dir / "logs" / f"aiperf-{name}.log")
            rows.append({"mode": mode, "cached_share": mix.cached_share, "exact": mix.exact,
                         "paraphrase": mix.paraphrase, "new": mix.new, **read_summary(artifacts),
                         "server_counted": counted(before, cache_counters(url)), "aiperf_cpu_pct": aiperf_cpu})
    return {"bench": "aiperf_cache", "url": url, "model": model, "requests_per_mix": requests,
            "concurrency": concurrency, "max_tokens": max_tokens, "bypass_header": BYPASS_HEADER,
            "warm_layers": layers, "rows": rows}


def scratch_dir(keep: Path | None) -> contextlib.AbstractContextManager[str]:
    """The folder for inputs, artifacts and logs: the one asked for (kept), or a temporary one."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return contextlib.nullcontext(str(keep))
    return tempfile.TemporaryDirectory(prefix="aiperf-")
