"""Benchmark: what one model execution costs per item at each batch size, outside Triton (embedding: MiniLM on
onnxruntime; preprocessing: the tokenizer's batch encode).

This bounds what Triton's dynamic batcher can gain for the model on this CPU (clients.ceiling; the sweep prints
the same ceiling beside its measured gain). Batch sizes are interleaved round by round, so drift hits them all
alike; prints one JSON line last.

    .venv/bin/python scripts/bench/embedding_batch_cost.py --model embedding --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os

from clients.ceiling import WORK, embedding_work, per_item_ms
from clients.workload import GeneratedWorkload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(WORK), default="embedding")
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (embedding)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = embedding_work(args.threads) if args.model == "embedding" else WORK[args.model]()
    load_start = os.getloadavg()[0]
    costs = per_item_ms(work, GeneratedWorkload({"fresh": 1.0}), sizes, args.rounds)
    single = costs[sizes[0]]
    result = {
        "model": args.model,
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "ms_per_item": {str(s): round(v, 4) for s, v in costs.items()},
        "items_per_s": {str(s): round(1000 / v, 1) for s, v in costs.items()},
        "speedup_vs_single": {str(s): round(single / v, 2) for s, v in costs.items()},
    }
    for size in sizes:
        print(f"batch {size:>3}: {result['ms_per_item'][str(size)]:8.4f} ms/item, "
              f"{result['items_per_s'][str(size)]:9.1f} items/s, x{result['speedup_vs_single'][str(size)]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
