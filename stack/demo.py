"""The main job (`make demo`): the whole request path on this machine, scripted, then everything stopped.

Starts Valkey (RediSearch loaded), Triton on the rendered CPU profile and the orchestrator, then talks to
the orchestrator with the official `openai` SDK: a miss, an exact hit, a semantic hit (a paraphrase), a
near-miss the guard refuses, and two requests sharing a long system prompt whose KV blocks the engine reuses.
It prints where each answer came from, its latency and the tokens it saved.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import openai
import tritonclient.http as httpclient
from rich.console import Console
from rich.table import Table

from stack import paths
from stack.orchestrator_process import OrchestratorProcess
from stack.render import render
from stack.triton import TritonServer
from stack.triton_stats import model_stats
from stack.valkey import ValkeyServer

#: A long shared system prompt (~700 tokens): the second question under it reuses the first one's KV blocks.
HANDBOOK = "You are the support assistant of Northwind Rail. Answer briefly from this handbook.\n" + "\n".join(
    f"Rule {n}: trains on line {n % 7 + 1} leave platform {n % 12 + 1} every {10 + n % 5} minutes; "
    f"tickets bought after {6 + n % 4} pm are valid until midnight of the next day." for n in range(1, 21)
)


@dataclass(frozen=True)
class Step:
    label: str
    messages: list[dict[str, str]]
    expect: str  # the layer the step demonstrates


def question(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


STEPS = [
    Step("first question", question("Which city is the capital of France?"), "miss"),
    Step("same question again", question("Which city is the capital of France?"), "exact"),
    Step("a paraphrase", question("What city is the capital of France?"), "semantic"),
    Step("near miss: other country", question("Which city is the capital of Germany?"), "miss"),
    Step("long system prompt, question 1",
         [{"role": "system", "content": HANDBOOK}, {"role": "user", "content": "How often do line 3 trains leave?"}],
         "miss"),
    Step("same system prompt, question 2",
         [{"role": "system", "content": HANDBOOK}, {"role": "user", "content": "When do evening tickets expire?"}],
         "miss"),
]


def embed_through_triton(url: str, sentences: list[str]) -> None:
    def one(sentence: str) -> np.ndarray:
        text = httpclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[sentence.encode()]], dtype=object))
        return httpclient.InferenceServerClient(url).infer("embedding", [text]).as_numpy("embedding")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, sentences))


def show_batching(console: Console, triton: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton.http_url)
    before = model_stats(client, "embedding")
    embed_through_triton(triton.http_url, [f"sentence {i} for the batcher" for i in range(64)])
    formed = model_stats(client, "embedding").minus(before)
    batches = ", ".join(f"{n}×{size}" for size, n in formed.batches.items())
    console.print(f"Triton's dynamic batcher: {formed.inference_count} embedding requests from 16 threads ran as "
                  f"{formed.execution_count} executions (count×size: {batches}; mean batch "
                  f"{formed.mean_batch_size:.1f})")


def ask(client: openai.OpenAI, step: Step) -> tuple[dict[str, Any], float, str]:
    started = time.perf_counter()
    completion = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=step.messages,
                                                max_tokens=96, temperature=0)
    elapsed_ms = (time.perf_counter() - started) * 1000
    cache = (completion.model_extra or {}).get("cache", {})
    return cache, elapsed_ms, completion.choices[0].message.content or ""


def run(console: Console | None = None) -> None:
    console = console or Console()
    repository = render("cpu", paths.STACK_HOME / "repository" / "cpu")
    with contextlib.ExitStack() as stack:
        valkey = stack.enter_context(ValkeyServer())
        console.print(f"[green]Valkey[/] (RediSearch loaded) on {valkey.url}")
        triton = stack.enter_context(TritonServer(repository))
        console.print(f"[green]Triton[/] ready: HTTP {triton.http_url}, gRPC {triton.grpc_url}")
        orchestrator = stack.enter_context(OrchestratorProcess(triton.grpc_url, valkey.url))
        console.print(f"[green]Orchestrator[/] ready: HTTP {orchestrator.http_url}, gRPC {orchestrator.grpc_target}")
        show_batching(console, triton)

        client = openai.OpenAI(base_url=f"{orchestrator.http_url}/v1", api_key="local", max_retries=0, timeout=300)
        table = Table(title="Chat through the orchestrator (openai SDK)")
        for column, justify in [("#", "right"), ("request", "left"), ("layer", "left"), ("ms", "right"),
                                ("similarity", "right"), ("tokens saved", "right"), ("KV blocks reused", "right")]:
            table.add_column(column, justify=justify)
        answers, surprises = [], []
        for number, step in enumerate(STEPS, 1):
            cache, elapsed_ms, answer = ask(client, step)
            layer = cache.get("layer", "?")
            if layer != step.expect:
                surprises.append(f"#{number} answered from '{layer}', expected '{step.expect}'")
            similarity = cache.get("similarity")
            table.add_row(str(number), step.label, f"[bold]{layer}[/]", f"{elapsed_ms:,.0f}",
                          "" if similarity is None else f"{similarity:.3f}", str(cache.get("tokens_saved", 0)),
                          str(cache.get("kv_cache_reused_blocks", "")))
            answers.append(f"#{number} {answer.strip()}")
        console.print(table)
        console.print("Answers:\n" + "\n".join(answers), highlight=False)
        for surprise in surprises:
            console.print(f"[yellow]{surprise}[/]")
    console.print("[green]Stopped the orchestrator, Triton and Valkey.[/]")
