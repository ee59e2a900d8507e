"""Benchmark: what one MiniLM execution costs per sentence at each batch size, outside Triton.

This bounds what Triton's dynamic batcher can gain for `embedding` on this CPU: if a batch of 16 costs
nearly 16 single runs, batching can only save the per-request overheads around the model. Batch sizes are
interleaved round by round, so drift on a shared machine hits them all alike; prints one JSON line last.

    .venv/bin/python scripts/bench/embedding_batch_cost.py --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from clients.workload import GeneratedWorkload
from model_assets.minilm import OnnxMiniLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (the profile's value)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model = OnnxMiniLM(intra_op_threads=args.threads)
    prompts = GeneratedWorkload({"fresh": 1.0})
    model.encode([next(prompts).text() for _ in range(8)])  # first-run allocations
    per_sentence: dict[int, list[float]] = {size: [] for size in sizes}
    load_start = os.getloadavg()[0]
    for _ in range(args.rounds):
        for size in sizes:
            batch = [next(prompts).text() for _ in range(size)]
            start = time.perf_counter()
            model.encode(batch)
            per_sentence[size].append((time.perf_counter() - start) * 1000 / size)
    single = statistics.median(per_sentence[sizes[0]])
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "ms_per_sentence": {str(s): round(statistics.median(v), 3) for s, v in per_sentence.items()},
        "sentences_per_s": {str(s): round(1000 / statistics.median(v), 1) for s, v in per_sentence.items()},
        "speedup_vs_single": {str(s): round(single / statistics.median(v), 2) for s, v in per_sentence.items()},
    }
    for size in sizes:
        print(f"batch {size:>3}: {result['ms_per_sentence'][str(size)]:7.3f} ms/sentence, "
              f"{result['sentences_per_s'][str(size)]:7.1f} sentences/s, x{result['speedup_vs_single'][str(size)]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
