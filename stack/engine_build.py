"""Build a TensorRT-LLM engine for the `tensorrt_llm` model from a Hugging Face checkpoint directory.

Two upstream steps, with every value from the deployment profile's `[engine]` table:
  1. `convert_checkpoint.py` of TensorRT-LLM's example for the model family (Llama/Mistral: `llama`, Qwen 1.5/2/2.5:
     `qwen`) turns the Hugging Face weights into a TensorRT-LLM checkpoint, split for tensor parallelism;
  2. `trtllm-build` compiles it with what in-flight batching and KV-cache reuse need: paged KV cache,
     paged context FMHA (a request can attend to reused blocks), packed inputs, the gemm plugin.
Inside the NGC image (`trtllm-build` on PATH) the commands run directly; elsewhere each one runs in the
profile's image with `docker run --gpus all`, so the engine is built by the TensorRT-LLM that serves it (an
engine runs only on the version that built it; the serving image, deploy/triton.Dockerfile, extends this image).
`--dry-run` prints every command and runs none.

Standard library only, so it runs with any Python >= 3.11: on a bare GPU host and inside the NGC image alike.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = PROJECT_ROOT / "model_repository" / "profiles"

#: Where the NGC tritonserver `-trtllm-python-py3` images keep TensorRT-LLM's examples.
CONTAINER_EXAMPLES_DIR = "/app/examples"
#: Hugging Face `architectures[0]` -> the TensorRT-LLM example folder under examples/models/core/.
FAMILY_BY_ARCHITECTURE = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen",
    "QWenLMHeadModel": "qwen",
}
DTYPES = ("auto", "float16", "bfloat16", "float32")
#: Container paths the host folders are mounted at when the build runs through docker.
MOUNT_HF, MOUNT_CHECKPOINT, MOUNT_ENGINE = "/workspace/hf", "/workspace/checkpoint", "/workspace/engine"


class EngineBuildError(ValueError):
    """A profile value or input that cannot produce a working engine; str() names the field."""


@dataclass(frozen=True)
class EngineSpec:
    """The `[engine]` table of a profile, validated."""

    dtype: str
    tp_size: int
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    tokens_per_block: int
    gemm_plugin: str
    chunked_context: bool

    @classmethod
    def from_profile(cls, profile: dict, where: str) -> EngineSpec:
        table = profile.get("engine")
        if not isinstance(table, dict):
            raise EngineBuildError(f"{where}: no [engine] table")
        fields = {"dtype": str, "tp_size": int, "max_batch_size": int, "max_input_len": int, "max_seq_len": int,
                  "max_num_tokens": int, "tokens_per_block": int, "gemm_plugin": str}
        for key in sorted(set(table) - set(fields)):
            raise EngineBuildError(f"{where}: [engine] unknown key '{key}'")
        values = {}
        for key, kind in fields.items():
            value = table.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                kind_name = "an integer" if kind is int else "a string"
                raise EngineBuildError(f"{where}: [engine] '{key}' must be {kind_name}, got {value!r}")
            values[key] = value
        parameters = profile.get("models", {}).get("tensorrt_llm", {}).get("parameters", {})
        spec = cls(**values, chunked_context=str(parameters.get("enable_chunked_context", False)).lower() == "true")
        spec.validate(where)
        return spec

    def validate(self, where: str) -> None:
        def fail(key: str, problem: str) -> None:
            raise EngineBuildError(f"{where}: [engine] '{key}' {problem}")

        if self.dtype not in DTYPES:
            fail("dtype", f"must be one of {', '.join(DTYPES)}")
        for key in ("tp_size", "max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens"):
            if getattr(self, key) < 1:
                fail(key, "must be at least 1")
        if self.tokens_per_block < 1 or self.tokens_per_block & (self.tokens_per_block - 1):
            fail("tokens_per_block", "must be a power of 2 (paged KV cache block size)")
        if self.max_input_len >= self.max_seq_len:
            fail("max_input_len", f"must be below max_seq_len ({self.max_seq_len}) to leave room for output")
        if self.max_num_tokens < self.max_input_len and not self.chunked_context:
            fail("max_num_tokens", f"is below max_input_len ({self.max_input_len}): a long prompt could never "
                 "be scheduled unless [models.tensorrt_llm.parameters] enable_chunked_context = true")
        if self.gemm_plugin not in ("auto", "float16", "bfloat16", "float32", "fp8", "disable"):
            fail("gemm_plugin", "must be auto, float16, bfloat16, float32, fp8 or disable")


@dataclass(frozen=True)
class BuildPaths:
    hf_model: Path
    checkpoint: Path
    engine: Path


def model_family(hf_model: Path, tp_size: int) -> str:
    """The TensorRT-LLM example family of a Hugging Face checkpoint, checked against tensor parallelism."""
    config_file = hf_model / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise EngineBuildError(f"--hf-model: {config_file} not found (a Hugging Face checkpoint folder)") from None
    except json.JSONDecodeError as error:
        raise EngineBuildError(f"--hf-model: {config_file} is not valid JSON: {error}") from None
    architectures = config.get("architectures") or ["(none)"]
    family = FAMILY_BY_ARCHITECTURE.get(architectures[0])
    if family is None:
        supported = ", ".join(sorted(FAMILY_BY_ARCHITECTURE))
        raise EngineBuildError(f"--hf-model: architecture {architectures[0]} is not supported (supported: {supported})")
    heads = config.get("num_attention_heads")
    if isinstance(heads, int) and heads % tp_size:
        raise EngineBuildError(f"[engine] 'tp_size' {tp_size} does not divide the model's {heads} attention heads")
    return family


def convert_command(family: str, spec: EngineSpec, paths: BuildPaths, examples_dir: str) -> list[str]:
    return [
        "python3", f"{examples_dir}/models/core/{family}/convert_checkpoint.py",
        "--model_dir", str(paths.hf_model),
        "--output_dir", str(paths.checkpoint),
        "--dtype", spec.dtype,
        "--tp_size", str(spec.tp_size),
    ]


def build_command(spec: EngineSpec, paths: BuildPaths) -> list[str]:
    return [
        "trtllm-build",
        "--checkpoint_dir", str(paths.checkpoint),
        "--output_dir", str(paths.engine),
        "--max_batch_size", str(spec.max_batch_size),
        "--max_input_len", str(spec.max_input_len),
        "--max_seq_len", str(spec.max_seq_len),
        "--max_num_tokens", str(spec.max_num_tokens),
        "--kv_cache_type", "paged",
        "--tokens_per_block", str(spec.tokens_per_block),
        "--use_paged_context_fmha", "enable",
        "--remove_input_padding", "enable",
        "--gemm_plugin", spec.gemm_plugin,
        "--workers", str(spec.tp_size),
    ]


def docker_command(image: str, shm_size: str, host: BuildPaths, inner: list[str]) -> list[str]:
    """Run one build step in the NGC image with the three host folders mounted."""
    return [
        "docker", "run", "--rm", "--gpus", "all", f"--shm-size={shm_size}",
        "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
        "-v", f"{host.hf_model}:{MOUNT_HF}:ro",
        "-v", f"{host.checkpoint}:{MOUNT_CHECKPOINT}",
        "-v", f"{host.engine}:{MOUNT_ENGINE}",
        image, *inner,
    ]


@dataclass(frozen=True)
class BuildPlan:
    folders: BuildPaths  # on this machine
    commands: list[list[str]]


def plan(profile_file: Path, hf_model: Path, out: Path, checkpoint: Path | None, in_container: bool,
         examples_dir: str = CONTAINER_EXAMPLES_DIR) -> BuildPlan:
    """Every command of the build, in order, and the host folders they use."""
    where = str(profile_file)
    try:
        profile = tomllib.loads(profile_file.read_text())
    except FileNotFoundError:
        raise EngineBuildError(f"--profile: {profile_file} not found") from None
    spec = EngineSpec.from_profile(profile, where)
    family = model_family(hf_model, spec.tp_size)
    host = BuildPaths(hf_model.resolve(), (checkpoint or out.with_name(out.name + "-checkpoint")).resolve(),
                      out.resolve())
    if in_container:
        return BuildPlan(host, [convert_command(family, spec, host, examples_dir), build_command(spec, host)])
    deploy = profile.get("deploy", {})
    image, shm_size = deploy.get("image"), deploy.get("shm_size")
    if not image or not shm_size:
        raise EngineBuildError(f"{where}: [deploy] needs 'image' and 'shm_size' to build outside the NGC image")
    inside = BuildPaths(Path(MOUNT_HF), Path(MOUNT_CHECKPOINT), Path(MOUNT_ENGINE))
    return BuildPlan(host, [
        docker_command(image, shm_size, host, convert_command(family, spec, inside, CONTAINER_EXAMPLES_DIR)),
        docker_command(image, shm_size, host, build_command(spec, inside)),
    ])


def profile_file(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    return candidate if candidate.suffix == ".toml" else PROFILES_DIR / f"{name_or_path}.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_engine.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu-h100", help="profile name or .toml path (its [engine] table)")
    parser.add_argument("--hf-model", required=True, type=Path, help="Hugging Face checkpoint folder")
    parser.add_argument("--out", required=True, type=Path, help="engine folder to write (Triton's gpt_model_path)")
    parser.add_argument("--checkpoint-dir", type=Path, help="intermediate TensorRT-LLM checkpoint (default OUT-checkpoint)")
    parser.add_argument("--runner", choices=("auto", "local", "docker"), default="auto",
                        help="local: trtllm-build on PATH (inside the NGC image); docker: run in the profile's image")
    parser.add_argument("--examples-dir", default=CONTAINER_EXAMPLES_DIR,
                        help="TensorRT-LLM examples folder for --runner local (a checkout of the matching tag)")
    parser.add_argument("--dry-run", action="store_true", help="print every command, run nothing")
    args = parser.parse_args(argv)

    in_container = args.runner == "local" or (args.runner == "auto" and shutil.which("trtllm-build") is not None)
    try:
        build = plan(profile_file(args.profile), args.hf_model, args.out, args.checkpoint_dir, in_container,
                        args.examples_dir)
    except EngineBuildError as error:
        print(f"build_engine: {error}", file=sys.stderr)
        return 2
    if not args.dry_run:
        # Created here, not by docker: a bind-mount source docker creates belongs to root.
        for folder in (build.folders.checkpoint, build.folders.engine):
            folder.mkdir(parents=True, exist_ok=True)
    for step, command in enumerate(build.commands, 1):
        print(shlex.join(command), flush=True)
        if args.dry_run:
            continue
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            print(f"build_engine: step {step} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
