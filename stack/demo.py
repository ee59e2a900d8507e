"""The main job (`make demo`): start Valkey and Triton on the CPU profile, embed sentences through Triton,
and show the batches Triton's dynamic batcher formed. Everything started here is stopped on exit."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import redis
import tritonclient.http as httpclient
from rich.console import Console
from rich.table import Table

from stack import paths
from stack.render import render
from stack.triton import TritonServer
from stack.triton_stats import model_stats
from stack.valkey import ValkeyServer

SENTENCES = [
    "What is the capital of France?",
    "Which city is the capital of France?",
    "What is the capital of Germany?",
    "How do I convert Celsius to Fahrenheit?",
    "How do I convert Fahrenheit to Celsius?",
    "Explain continuous batching in one sentence.",
    "What does KV-cache reuse save?",
    "Tell me a joke about GPUs.",
]


def embed_one(url: str, sentence: str) -> np.ndarray:
    client = httpclient.InferenceServerClient(url)
    text = httpclient.InferInput("text", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[sentence.encode()]], dtype=object))
    return client.infer("embedding", [text]).as_numpy("embedding")[0]


def run(console: Console | None = None) -> None:
    console = console or Console()
    repository = render("cpu", paths.STACK_HOME / "repository" / "cpu")
    with contextlib.ExitStack() as stack:
        valkey = stack.enter_context(ValkeyServer())
        console.print(f"[green]Valkey[/] with RediSearch on {valkey.url}")
        triton = stack.enter_context(TritonServer(repository))
        console.print(f"[green]Triton[/] ready: HTTP {triton.http_url}, gRPC {triton.grpc_url}")
        redis.Redis.from_url(valkey.url).ping()

        client = httpclient.InferenceServerClient(triton.http_url)
        before = model_stats(client, "embedding")
        workload = SENTENCES * 8
        with ThreadPoolExecutor(max_workers=16) as pool:
            vectors = list(pool.map(lambda s: embed_one(triton.http_url, s), workload))
        formed = model_stats(client, "embedding").minus(before)

        table = Table(title="Similarity to the first sentence (MiniLM through Triton)")
        table.add_column("sentence")
        table.add_column("cosine", justify="right")
        for sentence, vector in zip(SENTENCES, vectors):
            table.add_row(sentence, f"{float(vector @ vectors[0]):.3f}")
        console.print(table)
        batches = ", ".join(f"{n}×{size}" for size, n in formed.batches.items())
        console.print(f"{formed.inference_count} requests from 16 threads ran as {formed.execution_count} "
                      f"executions; batches (count×size): {batches}; mean batch {formed.mean_batch_size:.1f}")
    console.print("[green]Stopped Triton and Valkey.[/]")
