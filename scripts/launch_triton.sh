#!/usr/bin/env bash
# Start Triton on a rendered repository and stop it cleanly on Ctrl-C.
#   scripts/launch_triton.sh [--profile cpu] [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002]
#   scripts/launch_triton.sh --gpu --profile gpu-h100 [--dry-run]   # the NGC TensorRT-LLM container
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec "${root}/.venv/bin/python" -m stack triton "$@"
