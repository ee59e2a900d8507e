#!/usr/bin/env python
"""Triton's overhead on the LLM path, paired: Triton's BLS, the engine in-process and llama.cpp's own server.

Three systems run the same GGUF model with the same rendered engine config (slots, context, threads, polling):

- triton: the orchestrator's LLM model (`tensorrt_llm_bls`: preprocessing, engine, postprocessing) in Triton,
  streaming over gRPC (tritonclient aio), text in and text out;
- in_process: the CPU engine (cpu_engine.LlamaEngine) called from threads in this process, behind the same
  admission policy as in Triton, token ids in and out;
- llamacpp_server: llama.cpp's HTTP server as xllamacpp ships it (xllamacpp.Server, what a CPU user would run
  instead), in a child process on a loopback port, called on its OpenAI-compatible /v1/completions endpoint
  with streaming (httpx). Its parameters come from cpu_engine.engine.llama_params, as the engine's do; its
  HTTP threads are llama.cpp's default.

Each round runs every system at every concurrency (1, 4, 16) on the same prompts (one chat-formatted prompt
per stream, tokenized by the same tokenizer; new texts each round so no system finds them in its KV cache
from an earlier round), greedy, exactly --tokens tokens per request (end of sequence ignored). The order of
the systems rotates from round to round so drift and warm-up hit them alike. Reported per system and
concurrency: median and min-max over rounds of aggregate output tokens/s and TTFT p50; per concurrency the
paired ratios triton_over_inprocess, llamacpp_server_over_inprocess and triton_over_llamacpp_server, computed
within each round (same minute, same machine state) and then summarised the same way.

Which systems stay up: each is started once, warmed, and its idle CPU measured over --idle-probe-s. One that
stays under --idle-cpu-pct while idle (llama.cpp's threads sleep once polling ends) stays up through the
rounds; one that burns CPU while idle would steal from whichever system is measured, so it is stopped and
started again for its turn in every round. The JSON records each system's idle CPU and the policy it got.
The default run (3 rounds x 3 systems x 1/4/16 streams x 64 tokens = 1,344 tokens per system and round) took
331 s in a smoke run on this machine with a training job beside it for two of its three rounds; its calm
round generated for ~26 s in all, so an idle run should take 2-3 minutes. --rounds and --tokens make it
bigger. Prints one JSON line last; `wall_s` in it.

    .venv/bin/python scripts/bench/llm_throughput.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import tritonclient.grpc.aio as grpcaio
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from cpu_engine import tokenizer
from cpu_engine.admission import InflightAdmission
from cpu_engine.client import generate, text_inputs
from cpu_engine.config import EngineConfig
from cpu_engine.engine import LlamaEngine, llama_params
from cpu_engine.requests import GenerationRequest, Sampling
from llm_bench import MACHINE, median_ms, render_llm_repository, session_cpu_s
from model_assets import llm
from model_assets.chat import format_chat
from orchestrator.config import TritonSettings
from stack.ports import free_port
from stack.process import ManagedProcess, ManagedServer
from stack.triton import TritonServer

LLM_MODEL = TritonSettings().llm_model
BLS_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", LLM_MODEL)
SYSTEMS = ("triton", "in_process", "llamacpp_server")
RATIOS = {"triton_over_inprocess": ("triton", "in_process"),
          "llamacpp_server_over_inprocess": ("llamacpp_server", "in_process"),
          "triton_over_llamacpp_server": ("triton", "llamacpp_server")}


@dataclass
class Run:
    """One system at one concurrency in one round."""

    tok_s: float
    ttft_p50_ms: float


def prompts(round_index: int, count: int) -> list[str]:
    """Chat-formatted prompt texts, new in every round (no KV reuse across rounds), the same for every system."""
    return [format_chat([{"role": "user", "content": f"Story {round_index}.{i}: begin."}]) for i in range(count)]


def engine_config(repository: Path) -> EngineConfig:
    """The engine settings Triton's tensorrt_llm gets from the rendered repository."""
    parsed = text_format.Parse((repository / "tensorrt_llm" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    return EngineConfig.from_model_config(json_format.MessageToDict(parsed, preserving_proto_field_name=True),
                                          default_model_path=str(llm.gguf_path()))


def encode(texts: list[str]) -> list[list[int]]:
    vocabulary = tokenizer.load()
    return [tokenizer.encode_prompt(vocabulary, [text]) for text in texts]


class ServerSystem:
    """A system behind a server process of its own: started once, stopped at the end, measured by its CPU."""

    name: str

    def __init__(self, repository: Path, log_path: Path) -> None:
        self.repository, self.log_path = repository, log_path
        self.server: ManagedServer | None = None

    def new_server(self) -> ManagedServer:
        raise NotImplementedError

    def start(self) -> None:
        self.server = self.new_server().start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def cpu_s(self) -> float:
        assert self.server is not None and self.server.pid is not None
        return session_cpu_s(self.server.pid)

    def run(self, texts: list[str], tokens: int) -> Run:
        return asyncio.run(self._run(texts, tokens))

    async def _run(self, texts: list[str], tokens: int) -> Run:
        raise NotImplementedError


class TritonSystem(ServerSystem):
    name = "triton"

    def new_server(self) -> TritonServer:
        return TritonServer(self.repository, log_path=self.log_path)

    async def _run(self, texts: list[str], tokens: int) -> Run:
        assert isinstance(self.server, TritonServer)
        client = grpcaio.InferenceServerClient(self.server.grpc_url)
        start = time.perf_counter()
        try:
            results = await asyncio.gather(*(generate(client, LLM_MODEL, text_inputs(
                text, tokens, True, temperature=0.0, end_id=-1)) for text in texts))
        finally:
            await client.close()
        wall = time.perf_counter() - start
        if any(r.error for r in results):
            raise SystemExit(f"triton: request failed: {next(r.error for r in results if r.error)}")
        counts = [r.outputs.get("num_output_tokens", 0) for r in results]
        check_counts(self.name, counts, tokens)
        return Run(sum(counts) / wall, median_ms([r.ttft_s for r in results]))


class InProcessSystem:
    name = "in_process"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.engine: LlamaEngine | None = None

    def start(self) -> None:
        vocabulary = tokenizer.load()
        self.engine = LlamaEngine(self.config, lambda text: tokenizer.encode(vocabulary, text))

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def cpu_s(self) -> float:
        return time.process_time()  # this process: the engine's threads, and nothing else runs while probed

    def run(self, texts: list[str], tokens: int) -> Run:
        assert self.engine is not None
        engine = self.engine
        finished: queue.Queue[tuple[int, float]] = queue.Queue()
        start = time.perf_counter()

        def one(ids: list[int]) -> None:
            first: list[float] = []

            def on_progress(_progress) -> None:
                if not first:
                    first.append(time.perf_counter())

            request = GenerationRequest(input_ids=ids, max_new_tokens=tokens, streaming=True, end_id=-1,
                                        sampling=Sampling(temperature=0.0))
            outcome = engine.generate(request, on_progress, lambda: False, time.time_ns())
            finished.put((len(outcome.output_ids), first[0] - start))

        admission = InflightAdmission(self.config.slots, 0, one)
        for ids in encode(texts):
            admission.submit(ids)
        results = [finished.get() for _ in texts]
        wall = time.perf_counter() - start
        admission.close()
        check_counts(self.name, [n for n, _ in results], tokens)
        return Run(sum(n for n, _ in results) / wall, median_ms([t for _, t in results]))


@dataclass
class LlamaCppServer(ManagedServer):
    """llama.cpp's server (xllamacpp.Server) in a child process: this script run with --serve-llamacpp."""

    start_timeout_s = 120.0

    repository: Path
    log_path: Path
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-llamacpp", str(self.repository),
                "--port", str(self.port)]
        self._process = ManagedProcess("llama.cpp server", argv, self.log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


def serve_llamacpp(repository: Path, port: int) -> None:
    """The child: llama.cpp's server on loopback with the engine's llama.cpp settings, until SIGTERM."""
    params = llama_params(engine_config(repository))  # first: it sets libgomp's spin count
    import xllamacpp

    params.hostnames = ["127.0.0.1"]
    params.port = port
    server = xllamacpp.Server(params)
    print(f"llama.cpp server listening on {server.listening_address}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


class LlamaCppServerSystem(ServerSystem):
    name = "llamacpp_server"

    def new_server(self) -> LlamaCppServer:
        return LlamaCppServer(self.repository, self.log_path)

    async def _run(self, texts: list[str], tokens: int) -> Run:
        assert isinstance(self.server, LlamaCppServer)
        url = f"{self.server.url}/v1/completions"
        start = time.perf_counter()

        async def one(client: httpx.AsyncClient, ids: list[int]) -> tuple[int, float]:
            # The same llama.cpp request the engine sends (prompt ids, greedy, end of sequence ignored), less
            # the per-token timings only the engine reads, with OpenAI's usage at the end of the stream.
            body = GenerationRequest(input_ids=ids, max_new_tokens=tokens, end_id=-1,
                                     sampling=Sampling(temperature=0.0)).to_llama(cache_prompt=True)
            for key in ("verbose", "timings_per_token"):
                body.pop(key)
            body.update(max_tokens=tokens, stream_options={"include_usage": True})
            first, count = None, 0
            async with client.stream("POST", url, json=body) as reply:
                reply.raise_for_status()
                async for line in reply.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and chunk.get("choices") and chunk["choices"][0].get("text"):
                        first = time.perf_counter() - start
                    if chunk.get("usage"):
                        count = chunk["usage"]["completion_tokens"]
            return count, first if first is not None else time.perf_counter() - start

        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=len(texts))) as client:
            results = await asyncio.gather(*(one(client, ids) for ids in encode(texts)))
        wall = time.perf_counter() - start
        check_counts(self.name, [n for n, _ in results], tokens)
        return Run(sum(n for n, _ in results) / wall, median_ms([t for _, t in results]))


def check_counts(system: str, counts: list[int], tokens: int) -> None:
    """Every request must generate exactly the tokens asked for, or the comparison is not like for like."""
    if any(count != tokens for count in counts):
        raise SystemExit(f"{system}: generated {counts}, expected {tokens} each")


def idle_cpu_pct(system, seconds: float) -> float:
    """Share of one core the system uses while nobody calls it."""
    before, began = system.cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return 100 * (system.cpu_s() - before) / (time.perf_counter() - began)


def spread(values: list[float], digits: int) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request, exactly")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--idle-probe-s", type=float, default=3.0)
    parser.add_argument("--idle-cpu-pct", type=float, default=5.0,
                        help="a system idling above this share of a core is started and stopped per round")
    parser.add_argument("--serve-llamacpp", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_llamacpp:
        serve_llamacpp(args.serve_llamacpp, args.port)
        return
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llm-throughput-") as tmp:
        repository = render_llm_repository(Path(tmp) / "repository", models=BLS_MODELS)
        config = engine_config(repository)
        every = {"triton": TritonSystem(repository, Path(tmp) / "triton.log"),
                 "in_process": InProcessSystem(config),
                 "llamacpp_server": LlamaCppServerSystem(repository, Path(tmp) / "llamacpp.log")}
        systems = [every[name] for name in args.systems]
        idle, per_round = {}, {}
        try:
            for system in systems:
                system.start()
                system.run(prompts(-1, 1), 8)  # warm-up: model pages in, first-call setup
                idle[system.name] = round(idle_cpu_pct(system, args.idle_probe_s), 1)
                per_round[system.name] = idle[system.name] > args.idle_cpu_pct
                if per_round[system.name]:
                    system.stop()
                print(f"{system.name:16s} idle CPU {idle[system.name]:5.1f} % of a core -> "
                      f"{'started per round' if per_round[system.name] else 'stays up'}", flush=True)
            runs: dict[str, dict[int, list[Run]]] = {s.name: {c: [] for c in args.concurrency} for s in systems}
            for round_index in range(args.rounds):
                shift = round_index % len(systems)
                for system in systems[shift:] + systems[:shift]:
                    if per_round[system.name]:
                        system.start()
                        system.run(prompts(-1, 1), 8)
                    try:
                        for concurrency in args.concurrency:
                            run = system.run(prompts(round_index, concurrency), args.tokens)
                            runs[system.name][concurrency].append(run)
                            print(f"round {round_index} {system.name:16s} {concurrency:3d} streams "
                                  f"{run.tok_s:7.1f} tok/s  TTFT p50 {run.ttft_p50_ms:8.1f} ms", flush=True)
                    finally:
                        if per_round[system.name]:
                            system.stop()
        finally:
            for system in systems:
                system.stop()
    result: dict = {"bench": "llm_throughput", "machine": MACHINE, "tokens_per_request": args.tokens,
                    "rounds": args.rounds, "slots": config.slots, "threads": config.threads,
                    "batch_threads": config.batch_threads, "poll": config.poll, "llm_model": LLM_MODEL,
                    "idle_cpu_pct": idle,
                    "policy": {name: "per_round" if busy else "stays_up" for name, busy in per_round.items()}}
    for concurrency in args.concurrency:
        row: dict = {}
        for name, by_concurrency in runs.items():
            row[name] = {"tok_s": spread([r.tok_s for r in by_concurrency[concurrency]], 1),
                         "ttft_p50_ms": spread([r.ttft_p50_ms for r in by_concurrency[concurrency]], 1)}
        for ratio, (top, bottom) in RATIOS.items():
            if top in runs and bottom in runs:
                row[ratio] = spread([a.tok_s / b.tok_s for a, b in zip(runs[top][concurrency],
                                                                      runs[bottom][concurrency])], 3)
        result[f"concurrency_{concurrency}"] = row
    result["wall_s"] = round(time.perf_counter() - began)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
