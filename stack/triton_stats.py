"""Read what Triton did from its statistics API: the batch sizes the dynamic batcher formed, where time went."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import tritonclient.http as httpclient


@dataclass(frozen=True)
class ModelStats:
    """Cumulative counters of one model. Per-request durations (queue, compute_*, success) are summed over
    requests; a request's compute time is the duration of the batch it ran in. batch_compute_ns is summed
    over executions, per batch size."""

    inference_count: int
    execution_count: int
    batches: dict[int, int]
    queue_ns: int
    compute_infer_ns: int
    request_count: int
    compute_input_ns: int = 0
    compute_output_ns: int = 0
    success_ns: int = 0
    batch_compute_ns: dict[int, int] = field(default_factory=dict)

    def minus(self, before: ModelStats) -> ModelStats:
        """Counters accumulated since `before` (statistics are cumulative since load)."""
        values = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(before, f.name)
            if isinstance(mine, dict):
                sizes = sorted(set(mine) | set(theirs))
                values[f.name] = {s: n for s in sizes if (n := mine.get(s, 0) - theirs.get(s, 0))}
            else:
                values[f.name] = mine - theirs
        return ModelStats(**values)

    @property
    def mean_batch_size(self) -> float:
        executions = sum(self.batches.values())
        return sum(s * n for s, n in self.batches.items()) / executions if executions else 0.0


def model_stats(client: httpclient.InferenceServerClient, model: str) -> ModelStats:
    (entry,) = client.get_inference_statistics(model)["model_stats"][:1]
    inference = entry.get("inference_stats", {})

    def ns(key: str) -> int:
        return int(inference.get(key, {}).get("ns", 0))

    batch_stats = entry.get("batch_stats", [])
    return ModelStats(
        inference_count=int(entry.get("inference_count", 0)),
        execution_count=int(entry.get("execution_count", 0)),
        batches={int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in batch_stats},
        queue_ns=ns("queue"),
        compute_infer_ns=ns("compute_infer"),
        request_count=int(inference.get("success", {}).get("count", 0)),
        compute_input_ns=ns("compute_input"),
        compute_output_ns=ns("compute_output"),
        success_ns=ns("success"),
        batch_compute_ns={
            int(b["batch_size"]): sum(int(b[k].get("ns", 0)) for k in ("compute_input", "compute_infer",
                                                                       "compute_output"))
            for b in batch_stats
        },
    )


def wait_recorded(client: httpclient.InferenceServerClient, model: str, before: ModelStats, requests: int,
                  timeout_s: float = 5.0) -> ModelStats:
    """The model's counters once Triton has recorded `requests` more successful requests than `before`: a
    response can reach the client a moment before its statistics are recorded. After the timeout, whatever
    is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = model_stats(client, model)
        if now.request_count - before.request_count >= requests or time.monotonic() >= deadline:
            return now
        time.sleep(0.02)


def stats_after(client: httpclient.InferenceServerClient, model: str, before: ModelStats, requests: int,
                timeout_s: float = 5.0) -> ModelStats:
    """Counters since `before`, once `requests` more requests are recorded (see wait_recorded)."""
    return wait_recorded(client, model, before, requests, timeout_s).minus(before)
