#!/usr/bin/env bash
# Start Triton on a rendered repository and stop it cleanly on Ctrl-C.
#   scripts/launch_triton.sh [--profile cpu] [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002]
#   scripts/launch_triton.sh --gpu --profile gpu-h100 --image llm-stack/triton-trtllm:25.12 [--name NAME] [--dry-run]
#     the serving image (deploy/triton.Dockerfile); without --image the stock NGC image, refused when the
#     repository holds a model it cannot load (the embedding model)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec "${root}/.venv/bin/python" -m stack triton "$@"
