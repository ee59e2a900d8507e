"""Read what Triton did from its statistics API: the batch sizes the dynamic batcher formed, queue time."""

from __future__ import annotations

from dataclasses import dataclass

import tritonclient.http as httpclient


@dataclass(frozen=True)
class ModelStats:
    inference_count: int
    execution_count: int
    batches: dict[int, int]
    queue_ns: int
    compute_infer_ns: int
    request_count: int

    def minus(self, before: ModelStats) -> ModelStats:
        """Counters accumulated since `before` (statistics are cumulative since load)."""
        sizes = set(self.batches) | set(before.batches)
        batches = {s: self.batches.get(s, 0) - before.batches.get(s, 0) for s in sorted(sizes)}
        return ModelStats(
            self.inference_count - before.inference_count,
            self.execution_count - before.execution_count,
            {s: n for s, n in batches.items() if n},
            self.queue_ns - before.queue_ns,
            self.compute_infer_ns - before.compute_infer_ns,
            self.request_count - before.request_count,
        )

    @property
    def mean_batch_size(self) -> float:
        executions = sum(self.batches.values())
        return sum(s * n for s, n in self.batches.items()) / executions if executions else 0.0


def model_stats(client: httpclient.InferenceServerClient, model: str) -> ModelStats:
    (entry,) = client.get_inference_statistics(model)["model_stats"][:1]
    inference = entry.get("inference_stats", {})
    return ModelStats(
        inference_count=int(entry.get("inference_count", 0)),
        execution_count=int(entry.get("execution_count", 0)),
        batches={int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in entry.get("batch_stats", [])},
        queue_ns=int(inference.get("queue", {}).get("ns", 0)),
        compute_infer_ns=int(inference.get("compute_infer", {}).get("ns", 0)),
        request_count=int(inference.get("success", {}).get("count", 0)),
    )
