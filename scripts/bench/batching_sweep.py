"""Benchmark: the dynamic-batcher sweep against a fresh Triton on the rendered CPU profile.

Starts Triton (explicit model control, only the models named by --load), then runs `python -m clients sweep`
with the remaining arguments pointed at it, and stops Triton. Take final numbers on an otherwise idle machine:

    .venv/bin/python scripts/bench/batching_sweep.py --load embedding -- \
        --model embedding --concurrency 1,8,32 --p99-ms 500 --plot docs/img/sweep-embedding.png --json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from clients.cli import app
from stack.render import render
from stack.triton import TritonServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--load", default="embedding", help="comma-separated models to load")
    parser.add_argument("sweep_args", nargs=argparse.REMAINDER, help="arguments after -- go to the sweep")
    args = parser.parse_args()
    sweep_args = [a for a in args.sweep_args if a != "--"]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="sweep-") as scratch:
        repository = render(args.profile, Path(scratch) / "repository")
        server = TritonServer(repository, model_control_mode="explicit", load_models=tuple(args.load.split(",")),
                              log_path=Path(scratch) / "triton.log")
        with server:
            try:
                app(["sweep", "--http-url", server.http_url, "--grpc-url", server.grpc_url, *sweep_args])
            except SystemExit as done:
                print(f"load average {os.getloadavg()[0]:.2f} at the end", file=sys.stderr)
                if done.code:
                    raise


if __name__ == "__main__":
    main()
