"""`python -m clients`: chat with the orchestrator, load it or Triton, tune Triton's dynamic batcher, run
perf_analyzer, measure the cache with aiperf. Tables go to stdout; with --json the last stdout line is the result
as one JSON object; progress goes to stderr."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from clients.workload import workload

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode="markdown")
#: Wide enough for the sweep table when stdout is a file or a pipe.
out = Console(width=max(Console().width, 150))
err = Console(stderr=True)

TRITON_HTTP = "127.0.0.1:8000"
TRITON_GRPC = "127.0.0.1:8001"


def orchestrator_url() -> str:
    """The orchestrator's default HTTP address, from its own settings."""
    from orchestrator.api.settings import ApiSettings

    settings = ApiSettings()
    return f"http://{settings.host}:{settings.http_port}"


def orchestrator_grpc_target() -> str:
    """The orchestrator's default gRPC address, from its own settings."""
    from orchestrator.api.settings import ApiSettings

    settings = ApiSettings()
    return f"{settings.host}:{settings.grpc_port}"


def served_model() -> str:
    """The model name the orchestrator serves, from its own settings."""
    from orchestrator.config import ModelSettings

    return ModelSettings().name

Mix = Annotated[str, typer.Option(help="workload mix, e.g. exact=0.3,paraphrase=0.2,fresh=0.4,shared_prefix=0.1")]
PromptFile = Annotated[Path | None, typer.Option(help="prompts (JSONL with 'prompt', or one per line) instead of the generator")]
AsJson = Annotated[bool, typer.Option("--json", help="print the result as one JSON line last")]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(Text(message, style="red"))
    return typer.Exit(code)


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise fail(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise fail(f"{option}: give at least one value")
    return values


def emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


@app.command()
def load(
    target: Annotated[str, typer.Option(help="triton (a model over gRPC), http or grpc (the orchestrator)")] = "triton",
    url: Annotated[str | None, typer.Option(help="Triton gRPC host:port, orchestrator base URL or gRPC host:port")] = None,
    model: Annotated[str | None, typer.Option(help="Triton model (default embedding), or the model name sent to the orchestrator (default: the one it serves)")] = None,
    concurrency: Annotated[int | None, typer.Option(help="closed loop: clients each with one request in flight")] = None,
    rate: Annotated[float | None, typer.Option(help="open loop: Poisson arrivals per second")] = None,
    duration: Annotated[float | None, typer.Option(help="seconds to issue requests")] = 10.0,
    requests: Annotated[int | None, typer.Option(help="stop after this many requests (instead of --duration)")] = None,
    mix: Mix = "fresh=1",
    file: PromptFile = None,
    seed: int = 0,
    max_tokens: int = 32,
    stats_url: Annotated[str | None, typer.Option(help="Triton HTTP host:port: add Triton's own statistics")] = None,
    api_key: Annotated[str, typer.Option(envvar="ORCHESTRATOR_API_KEY")] = "none",
    as_json: AsJson = False,
) -> None:
    """Closed- or open-loop load with a live progress bar and a summary (throughput, latency percentiles,
    TTFT, errors by kind, hits by cache layer; with --stats-url the batches Triton formed)."""
    from clients.load import Plan, run_load
    from clients.report import summary_table
    from clients.targets import OrchestratorGrpcTarget, OrchestratorHttpTarget, TritonTarget

    if concurrency is None and rate is None:
        concurrency = 8
    try:
        plan = Plan(concurrency, rate, None if requests else duration, requests)
        items = workload(mix, file, seed)
    except ValueError as error:
        raise fail(str(error)) from None
    if target == "triton":
        model = model or "embedding"
        chosen = TritonTarget(url or TRITON_GRPC, model, max_tokens)
    elif stats_url:
        raise fail("--stats-url reads a Triton model's statistics: use it with --target triton")
    elif target == "http":
        chosen = OrchestratorHttpTarget(url or orchestrator_url(), model or served_model(), max_tokens, api_key)
    elif target == "grpc":
        chosen = OrchestratorGrpcTarget(url or orchestrator_grpc_target(), model or served_model(), max_tokens, api_key)
    else:
        raise fail(f"--target: {target!r} is not one of triton, http, grpc")

    async def run() -> dict:
        import tritonclient.http as httpclient

        from stack.triton_stats import model_stats, stats_after

        try:
            await chosen.open()
        except ValueError as error:
            raise fail(str(error)) from None
        stats_client = httpclient.InferenceServerClient(stats_url) if stats_url else None
        before = model_stats(stats_client, model) if stats_client else None
        try:
            with progress_bar() as bar:
                task = bar.add_task(plan.mode, total=requests)
                summary = await run_load(chosen, items, plan, lambda n: bar.advance(task, n), seed)
        finally:
            await chosen.close()
        if stats_client:
            ok = sum(1 for o in summary.outcomes if o.error is None)
            summary.server = stats_after(stats_client, model, before, ok)
            stats_client.close()
        return summary.to_dict()

    result = asyncio.run(run())
    out.print(summary_table(result, f"load: {result['target']}"))
    emit(result, as_json)


@app.command()
def sweep(
    model: Annotated[str, typer.Option(help="Triton model to tune (dynamic batcher)")] = "embedding",
    http_url: Annotated[str, typer.Option(help="Triton HTTP host:port (model control, statistics)")] = TRITON_HTTP,
    grpc_url: Annotated[str, typer.Option(help="Triton gRPC host:port (the load)")] = TRITON_GRPC,
    delay_us: Annotated[str, typer.Option(help="max_queue_delay_microseconds values")] = "0,1000,4000",
    preferred: Annotated[str, typer.Option(help="preferred_batch_size sets, ';'-separated, '-' for none")] = "-;8,16,32",
    max_batch: Annotated[str, typer.Option(help="max_batch_size values")] = "8,32",
    instances: Annotated[str, typer.Option(help="instance_group count values")] = "1,2",
    concurrency: Annotated[str, typer.Option(help="client concurrencies to drive each configuration at")] = "1,8,32",
    at_concurrency: Annotated[int | None, typer.Option(help="pick the best at this concurrency (default: the highest)")] = None,
    p99_ms: Annotated[float, typer.Option(help="latency budget: p99 at --at-concurrency must stay within it")] = 250.0,
    duration: Annotated[float, typer.Option(help="seconds measured per configuration and concurrency")] = 5.0,
    warmup: Annotated[float, typer.Option(help="seconds of unmeasured load before each measurement")] = 1.0,
    confirm: Annotated[int, typer.Option(help="rounds re-measuring the best and the unbatched baseline alternately")] = 0,
    driver: Annotated[str, typer.Option(help="load driver: python (asyncio client) or perf_analyzer (C++; "
                                             "--duration and --warmup do not apply)")] = "python",
    perf_window_requests: Annotated[int, typer.Option(help="perf_analyzer driver: requests per measurement "
                                                           "window")] = 500,
    mix: Mix = "fresh=1",
    file: PromptFile = None,
    seed: int = 0,
    plot: Annotated[Path | None, typer.Option(help="write the PNG plot here")] = None,
    write: Annotated[str | None, typer.Option(help="profile name or path: put the best configuration into it")] = None,
    as_json: AsJson = False,
) -> None:
    """Load each dynamic-batcher configuration through explicit model control, drive it, read the batches
    Triton formed, and pick the fastest within the p99 budget against the unbatched baseline."""
    from clients import sweep as sweeping
    from clients.perf import PerfError

    if driver not in sweeping.DRIVERS:
        raise fail(f"--driver must be one of {', '.join(sweeping.DRIVERS)}, got {driver!r}")
    concurrencies = int_list(concurrency, "--concurrency")
    at = at_concurrency or max(concurrencies)
    if at not in concurrencies:
        raise fail(f"--at-concurrency {at} is not among --concurrency {concurrency}")
    preferred_sets = [[] if group.strip() in ("-", "none", "") else int_list(group, "--preferred")
                      for group in preferred.split(";")]
    try:
        candidates = sweeping.grid(int_list(delay_us, "--delay-us"), preferred_sets,
                                   int_list(max_batch, "--max-batch"), int_list(instances, "--instances"))
        items = workload(mix, file, seed)
    except ValueError as error:
        raise fail(str(error)) from None

    if write:
        from clients.profile_writer import check_writable

        try:
            check_writable(write, model)
        except ValueError as error:
            raise fail(str(error)) from None
    with progress_bar() as bar:
        task = bar.add_task(f"sweep {model}", total=len(candidates) * len(concurrencies) + 2 * confirm)

        def on_point(point: sweeping.Point) -> None:
            bar.advance(task)
            bar.console.print(f"  {point.phase} {point.config.label} @ {point.concurrency}: {point.rps:.1f} req/s, "
                              f"p99 {point.p99_ms:.1f} ms, mean batch {point.summary['server']['mean_batch_size']}")

        try:
            points = asyncio.run(sweeping.run_sweep(http_url, grpc_url, model, candidates, concurrencies,
                                                    duration, warmup, items, on_point, at, p99_ms, confirm,
                                                    driver, perf_window_requests))
        except (sweeping.SweepError, PerfError, ValueError) as error:
            raise fail(str(error), 1) from None
    from clients.ceiling import WORK, ceiling

    batch_cost = ceiling(model, max(int_list(max_batch, "--max-batch")), workload(mix, file, seed + 1)) \
        if model in WORK else None
    result = sweeping.result(model, points, at, p99_ms, batch_cost)
    best, baseline = sweeping.choose(points, at, p99_ms)
    out.print(sweeping.points_table(points, best, p99_ms))
    if best is None:
        out.print(f"[yellow]no batched configuration kept p99 within {p99_ms:g} ms at concurrency {at}[/]")
    else:
        paired = f" (median of {confirm} paired re-measurements)" if result["confirmed"] else ""
        out.print(f"best at concurrency {at}: [bold]{best.config.label}[/] {result['best_rps']:.1f} req/s, "
                  f"unbatched ({baseline.config.label}) {result['unbatched_rps']:.1f} req/s{paired}: "
                  f"gain {result['batching_gain']}x")
        if batch_cost:
            out.print(f"the model's own batch-cost ceiling here: {batch_cost['ceiling']}x (per item at batch 1 over "
                      f"batch {batch_cost['largest_batch']}); gain over ceiling {result['gain_over_ceiling']}")
    if plot:
        from clients.plots import sweep_plot

        title = f"{model}: dynamic-batcher sweep, p99 budget {p99_ms:g} ms, best at concurrency {at}"
        result["plot"] = str(sweep_plot(points, best, baseline, p99_ms, plot, title))
    if write and best is not None:
        from clients.profile_writer import write_batcher

        try:
            result["written"] = str(write_batcher(write, model, best.config))
        except ValueError as error:
            raise fail(str(error), 1) from None
        out.print(f"wrote the best configuration into {result['written']}; render the repository again")
    emit(result, as_json)


@app.command()
def perf(
    model: Annotated[str, typer.Option(help="Triton model")] = "embedding",
    url: Annotated[str, typer.Option(help="Triton gRPC host:port")] = TRITON_GRPC,
    concurrency_range: Annotated[str, typer.Option(help="perf_analyzer start:end:step (end included)")] = "8:32:8",
    window_requests: Annotated[int, typer.Option(help="minimum requests per measurement window")] = 200,
    stability: Annotated[int, typer.Option(help="allowed max/min spread of the last 3 windows, %")] = 100,
    max_trials: Annotated[int, typer.Option(help="windows before perf_analyzer gives up")] = 10,
    max_tokens: int = 32,
    mix: Mix = "fresh=1",
    file: PromptFile = None,
    seed: int = 0,
    as_json: AsJson = False,
) -> None:
    """Run the bundled perf_analyzer with real prompts; one summary per concurrency, as `load` reports."""
    from clients.perf import PerfError, PerfSettings, run_perf
    from clients.report import summary_table

    settings = PerfSettings(concurrency_range, window_requests, stability, max_trials, max_tokens)
    try:
        results = run_perf(url, model, workload(mix, file, seed), settings)
    except (PerfError, ValueError) as error:
        raise fail(str(error), 1) from None
    for result in results:
        out.print(summary_table(result, f"perf: {result['target']}"))
    emit({"model": model, "results": results}, as_json)


@app.command()
def chat(
    protocol: Annotated[str, typer.Option(help="http (OpenAI-compatible, SSE) or grpc (orchestrator.v1)")] = "http",
    url: Annotated[str | None, typer.Option(help="orchestrator base URL, or gRPC host:port (default: from its settings)")] = None,
    model: Annotated[str | None, typer.Option(help="model name sent (default: the one the orchestrator serves)")] = None,
    system: Annotated[str | None, typer.Option(help="system prompt")] = None,
    message: Annotated[str | None, typer.Option(help="send this one message and exit")] = None,
    max_tokens: int = 128,
    api_key: Annotated[str, typer.Option(envvar="ORCHESTRATOR_API_KEY")] = "none",
) -> None:
    """Chat with the orchestrator, over HTTP or gRPC: answers stream in, each followed by the layer that
    served it (exact / semantic / miss) and its timings. Ctrl-D or an empty line ends."""
    import grpc
    import openai

    from clients.chat import chat_turn, grpc_chat_turn, grpc_stub

    if protocol not in ("http", "grpc"):
        raise fail(f"--protocol: {protocol!r} is not one of http, grpc")
    history = [{"role": "system", "content": system}] if system else []
    model = model or served_model()

    def show(text: str) -> None:
        out.print(text, end="", highlight=False, markup=False)

    async def session() -> None:
        if protocol == "http":
            base = url or orchestrator_url()
            client = openai.AsyncOpenAI(base_url=base.rstrip("/") + "/v1", api_key=api_key, max_retries=0)
            ask = functools.partial(chat_turn, client, model, max_tokens=max_tokens, on_text=show)
            close = client.close
        else:
            channel, stub = grpc_stub(url or orchestrator_grpc_target())
            ask = functools.partial(grpc_chat_turn, stub, api_key, model, max_tokens=max_tokens, on_text=show)
            close = channel.close

        async def turn(text: str) -> None:
            history.append({"role": "user", "content": text})
            try:
                reply = await ask(history)
            except openai.APIStatusError as error:
                history.pop()
                err.print(f"{error.status_code}: {error.message}", markup=False)
                return
            except grpc.aio.AioRpcError as error:
                history.pop()
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    raise fail(f"cannot reach the orchestrator: {error.details()}", 1) from None
                err.print(f"{error.code().name}: {error.details()}", markup=False)
                return
            except openai.APIConnectionError as error:
                history.pop()
                raise fail(f"cannot reach the orchestrator: {error}", 1) from None
            history.append({"role": "assistant", "content": reply.text})
            ttft = f"{reply.ttft_s * 1000:.0f} ms" if reply.ttft_s is not None else "-"
            colour = {"exact": "green", "semantic": "cyan", "miss": "yellow"}.get(reply.layer, "white")
            out.print(Text.assemble("\n", (f"[{reply.layer}]", colour),
                                    f" first token {ttft}, total {reply.total_s * 1000:.0f} ms"))

        try:
            if message is not None:
                await turn(message)
                return
            while True:
                try:
                    text = await asyncio.to_thread(input, "> ")
                except EOFError:
                    return
                if not text.strip():
                    return
                await turn(text)
        finally:
            await close()

    asyncio.run(session())


@app.command()
def aiperf(
    url: Annotated[str | None, typer.Option(help="orchestrator base URL (default: start the local CPU stack on free ports)")] = None,
    model: Annotated[str | None, typer.Option(help="model name sent (default: the one the orchestrator serves)")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="ORCHESTRATOR_API_KEY", help="sent as Authorization: Bearer")] = None,
    mixes: Annotated[str, typer.Option(help="shares of each file answerable from the cache, %")] = "0,50,90",
    requests: Annotated[int, typer.Option(help="requests per file (one file per mix)")] = 20,
    concurrency: Annotated[int, typer.Option(help="aiperf's concurrent requests")] = 2,
    max_tokens: Annotated[int, typer.Option(help="output tokens asked per request (misses generate them)")] = 16,
    tokenizer: Annotated[str | None, typer.Option(help="aiperf's tokenizer (default: the served model's, else builtin)")] = None,
    seed: Annotated[int, typer.Option(help="which sentence pairs: change it for a deployment that already ran this")] = 0,
    keep: Annotated[Path | None, typer.Option(help="keep inputs, aiperf artifacts and logs in this folder")] = None,
    as_json: AsJson = False,
) -> None:
    """Run NVIDIA's aiperf against the orchestrator's OpenAI endpoint, streaming, on files mixing exact repeats,
    paraphrases and new questions (0/50/90 % answerable from cache by default), first with the cache and then
    bypassing it (Cache-Control: no-cache, no-store); one table of aiperf's own TTFT, inter-token latency and
    throughputs per mix and mode."""
    from rich.table import Table

    from clients import aiperf as bench

    shares = [value / 100 for value in int_list(mixes, "--mixes")]
    if any(not 0 <= share <= 1 for share in shares):
        raise fail("--mixes: shares are percentages, 0-100")
    began = time.perf_counter()
    with bench.scratch_dir(keep) as work:
        work_dir = Path(work)
        try:
            with contextlib.ExitStack() as stack:
                if url is None:
                    err.print("starting the local CPU stack (Valkey, Triton, the orchestrator) ...")
                    url = stack.enter_context(bench.local_stack(work_dir / "stack"))
                result = bench.benchmark(url, model or served_model(), api_key, shares, requests, concurrency,
                                         max_tokens, tokenizer or bench.local_tokenizer(), work_dir,
                                         say=lambda line: err.print(line, markup=False), seed=seed)
        except (RuntimeError, ValueError, OSError) as error:
            raise fail(str(error), 1) from None
    result["wall_s"] = round(time.perf_counter() - began)
    table = Table(title=f"aiperf against {result['url']}: {requests} requests per mix, concurrency {concurrency}, "
                        f"{max_tokens} tokens")
    for column in ("mode", "from cache", "file: exact/para/new", "server: exact/sem/miss/bypass", "TTFT ms", "ITL ms",
                   "requests/s", "output tok/s", "errors", "aiperf CPU %"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for row in result["rows"]:
        server = row["server_counted"]
        table.add_row(row["mode"], f"{row['cached_share']:.0%}", f"{row['exact']}/{row['paraphrase']}/{row['new']}",
                      "/".join(str(server[k]) for k in ("exact", "semantic", "miss", "bypass")) if server else "-",
                      *(f"{row[key]:g}" if row[key] is not None else "-"
                        for key in ("ttft_ms", "itl_ms", "requests_per_s", "output_tok_s")), str(row["errors"]),
                      f"{row['aiperf_cpu_pct']:g}")
    out.print(table)
    emit(result, as_json)
