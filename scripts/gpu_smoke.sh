#!/usr/bin/env bash
# GPU smoke test in one command, on a host with an NVIDIA GPU, Docker and the NVIDIA Container Toolkit:
#   1. builds a TensorRT-LLM engine from a local Hugging Face chat model (scripts/build_engine.sh, in the
#      profile's NGC image),
#   2. builds the serving image (deploy/triton.Dockerfile),
#   3. starts Triton in it (scripts/launch_triton.sh --gpu) and waits for /v2/health/ready,
#   4. starts Valkey and the orchestrator as local processes and sends the demo's conversation through the
#      orchestrator (scripts/gpu_smoke_client.py), printing the table.
# Triton and the orchestrator read the model's tokenizer (and chat template) from the same folder, DIR.
# Exits non-zero on any failure; stops everything it started (Triton's container included) on the way out.
#   scripts/gpu_smoke.sh --hf-model DIR [--model-name NAME] [--profile gpu-h100] [--work DIR] [--image TAG]
#                        [--repository DIR] [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002]
#                        [--ready-timeout 900] [--dry-run]
# DIR: e.g. `hf download Qwen/Qwen2.5-0.5B-Instruct --local-dir DIR` (a Qwen 2.5 model suits the gpu-h100
# profile's end/pad tokens). --dry-run prints every command and runs nothing (no docker needed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

hf_model="" model_name="" profile="gpu-h100" work="${root}/.stack/gpu-smoke" image="" repository=""
http_port=8000 grpc_port=8001 metrics_port=8002 ready_timeout=900 dry_run=0
value() { [[ $# -ge 2 && -n "$2" ]] || { echo "gpu_smoke: $1 needs a value" >&2; exit 2; }; }
while (($#)); do
  case "$1" in
    --hf-model) value "$@"; hf_model="$2"; shift 2 ;;
    --model-name) value "$@"; model_name="$2"; shift 2 ;;
    --profile) value "$@"; profile="$2"; shift 2 ;;
    --work) value "$@"; work="$2"; shift 2 ;;
    --image) value "$@"; image="$2"; shift 2 ;;
    --repository) value "$@"; repository="$2"; shift 2 ;;
    --http-port) value "$@"; http_port="$2"; shift 2 ;;
    --grpc-port) value "$@"; grpc_port="$2"; shift 2 ;;
    --metrics-port) value "$@"; metrics_port="$2"; shift 2 ;;
    --ready-timeout) value "$@"; ready_timeout="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_smoke: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$hf_model" ]]; then
  echo "gpu_smoke: --hf-model DIR is required (a local Hugging Face chat model folder)" >&2
  exit 2
fi
hf_model="$(realpath -m "$hf_model")"
work="$(realpath -m "$work")"
model_name="${model_name:-$(basename "$hf_model")}"
profile_file="${root}/model_repository/profiles/${profile}.toml"
[[ "$profile" == *.toml ]] && profile_file="$(realpath -m "$profile")"
[[ -f "$profile_file" ]] || { echo "gpu_smoke: --profile: $profile_file not found" >&2; exit 2; }

say() { if [[ -t 1 ]]; then printf '\033[1m==> %s\033[0m\n' "$*"; else printf '==> %s\n' "$*"; fi; }
# Print a command (shell-quoted), then run it unless --dry-run.
run() {
  printf '%q ' "$@"; printf '\n'
  ((dry_run)) || "$@"
}

if ((!dry_run)); then
  for tool in docker curl; do
    command -v "$tool" >/dev/null || { echo "gpu_smoke: $tool not found" >&2; exit 1; }
  done
fi
if [[ ! -x "${root}/.venv/bin/python" ]]; then
  say "0. the project's Python environment (.venv: rendering, Valkey, the orchestrator)"
  run "${root}/scripts/setup"
fi

# The serving image tag and where the engine lies under the engine mount, from the profile (tomllib: 3.11+).
python=""
for candidate in "${root}/.venv/bin/python" python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import tomllib' 2>/dev/null; then
    python="$candidate"; break
  fi
done
[[ -n "$python" ]] || { echo "gpu_smoke: no Python 3.11+ found (run scripts/setup)" >&2; exit 1; }
layout="$("$python" - "$profile_file" <<'EOF'
import sys, tomllib
from pathlib import PurePosixPath
profile = tomllib.loads(open(sys.argv[1]).read())
deploy = profile["deploy"]
engine = PurePosixPath(profile["models"]["tensorrt_llm"]["parameters"]["gpt_model_path"])
print(deploy["serving_image"], engine.relative_to(deploy["engine_mount"]))
EOF
)"
read -r serving_image engine_subdir <<< "$layout"
image="${image:-$serving_image}"
container="llm-stack-gpu-smoke-$$"
triton_log="${work}/triton.log"

triton_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$triton_pid" ]]; then
    if ((status != 0)); then
      echo "gpu_smoke: failed (exit $status); the end of Triton's log ($triton_log):" >&2
      tail -n 40 "$triton_log" >&2 || true
    fi
    say "stopping Triton ($container)"
    docker stop --time 30 "$container" >/dev/null 2>&1 || true
    # The launcher itself, in case it had not started the container yet.
    kill "$triton_pid" 2>/dev/null || true
    wait "$triton_pid" 2>/dev/null || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "1. engine for ${model_name}"
run "${root}/scripts/build_engine.sh" --profile "$profile" --hf-model "$hf_model" \
  --out "${work}/engines/${engine_subdir}" --checkpoint-dir "${work}/checkpoint"

say "2. serving image ${image}"
run docker build -f "${root}/deploy/triton.Dockerfile" -t "$image" "$root"

say "3. Triton (log: ${triton_log})"
launch=("${root}/scripts/launch_triton.sh" --gpu --profile "$profile" --image "$image" --name "$container"
        --engine-dir "${work}/engines" --tokenizer-dir "$hf_model"
        --http-port "$http_port" --grpc-port "$grpc_port" --metrics-port "$metrics_port")
[[ -n "$repository" ]] && launch+=(--repository "$repository")
ready=(curl -sf "http://127.0.0.1:${http_port}/v2/health/ready")
if ((dry_run)); then
  run "${launch[@]}"
  printf '%q ' "${ready[@]}"; printf '  # every 2 s, up to %s s\n' "$ready_timeout"
else
  mkdir -p "$work"
  printf '%q ' "${launch[@]}"; printf '\n'
  "${launch[@]}" > "$triton_log" 2>&1 &
  triton_pid=$!
  deadline=$((SECONDS + ready_timeout))
  until "${ready[@]}" >/dev/null; do
    if ! kill -0 "$triton_pid" 2>/dev/null; then
      echo "gpu_smoke: Triton exited before it was ready" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "gpu_smoke: Triton not ready after ${ready_timeout}s" >&2
      exit 1
    fi
    sleep 2
  done
  say "Triton ready on 127.0.0.1:${http_port} (HTTP), :${grpc_port} (gRPC)"
fi

say "4. Valkey + orchestrator, the demo's conversation"
run "${root}/.venv/bin/python" "${root}/scripts/gpu_smoke_client.py" --triton-url "127.0.0.1:${grpc_port}" \
  --model-name "$model_name" --tokenizer-dir "$hf_model"
