#!/usr/bin/env bash
# Build the TensorRT-LLM engine for a deployment profile from a Hugging Face checkpoint folder.
#   scripts/build_engine.sh --hf-model DIR --out DIR [--profile gpu-h100] [--runner auto|local|docker] [--dry-run]
# Values come from the profile's [engine] table; see stack/engine_build.py and docs/deploy-gpu.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="python3"
[[ -x "${root}/.venv/bin/python" ]] && python="${root}/.venv/bin/python"
PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" exec "${python}" -m stack.engine_build "$@"
