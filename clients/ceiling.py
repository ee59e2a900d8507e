"""The most dynamic batching can gain for a model on this machine: its own per-item cost at batch 1 over its
per-item cost at the largest batch, measured in-process (no Triton, no client) on the same inputs.

A GPU runs a batch of 32 for little more than one item, so the ceiling is large; a CPU core runs MiniLM's
matrix products at about the same rate batched or not, so it is small there. `gain_over_ceiling` (the sweep's
measured gain over this) says how much of what the hardware allows the batcher configuration achieved.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence

from clients.workload import WorkItem

#: A model's batched computation: a batch of texts in, nothing out that matters here.
BatchWork = Callable[[Sequence[str]], object]


def embedding_work(threads: int = 1) -> BatchWork:
    from model_assets.minilm import OnnxMiniLM

    return OnnxMiniLM(intra_op_threads=threads).encode


def preprocessing_work() -> BatchWork:
    """What the preprocessing model computes per execute(): the prompts' ids in one batch encode."""
    from cpu_engine import tokenizer

    vocabulary = tokenizer.load()
    return lambda texts: tokenizer.encode_batch(vocabulary, list(texts))


WORK: dict[str, Callable[[], BatchWork]] = {"embedding": embedding_work, "preprocessing": preprocessing_work}


def per_item_ms(work: BatchWork, items: Iterator[WorkItem], sizes: Sequence[int], rounds: int
                ) -> dict[int, float]:
    """Median milliseconds per item at each batch size, sizes interleaved round by round (drift hits all)."""
    work([next(items).text() for _ in range(8)])  # first-run allocations
    samples: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            batch = [next(items).text() for _ in range(size)]
            start = time.perf_counter()
            work(batch)
            samples[size].append((time.perf_counter() - start) * 1000 / size)
    return {size: statistics.median(values) for size, values in samples.items()}


def ceiling(model: str, largest_batch: int, items: Iterator[WorkItem], rounds: int = 15) -> dict:
    """{"ms_per_item": {1: .., N: ..}, "ceiling": cost at 1 / cost at N} for a model the sweep can tune."""
    if model not in WORK:
        raise ValueError(f"no batch-cost model for {model!r} (known: {', '.join(WORK)})")
    costs = per_item_ms(WORK[model](), items, (1, largest_batch), rounds)
    return {"largest_batch": largest_batch, "ms_per_item": {str(k): round(v, 4) for k, v in costs.items()},
            "ceiling": round(costs[1] / costs[largest_batch], 3)}
