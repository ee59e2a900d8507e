"""scripts/build_engine.sh: the exact convert_checkpoint / trtllm-build commands, flag by flag, from the profile."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

from stack import paths

SCRIPT = paths.PROJECT_ROOT / "scripts" / "build_engine.sh"
GPU_PROFILE = paths.PROFILES_DIR / "gpu-h100.toml"


def hf_checkpoint(folder: Path, architecture: str = "LlamaForCausalLM", heads: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "num_attention_heads": heads}))
    return folder


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


def flags(argv: list[str]) -> dict[str, str]:
    """`--name value` pairs of a command (every flag these commands use takes a value)."""
    pairs = {}
    for index, token in enumerate(argv):
        if token.startswith("--") and "=" not in token:
            pairs[token] = argv[index + 1]
    return pairs


def profile_copy(tmp_path: Path, engine_overrides: dict, chunked_context: bool | None = None) -> Path:
    """The GPU profile with some [engine] values replaced (TOML written back by hand: the tables are flat)."""
    data = tomllib.loads(GPU_PROFILE.read_text())
    engine = {**data["engine"], **engine_overrides}
    lines = ["[engine]", *(f"{k} = {json.dumps(v)}" for k, v in engine.items()), "[deploy]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["deploy"].items()]
    if chunked_context is not None:
        lines += ["[models.tensorrt_llm.parameters]", f"enable_chunked_context = {json.dumps(chunked_context)}"]
    target = tmp_path / "profile.toml"
    target.write_text("\n".join(lines) + "\n")
    return target


@pytest.fixture(scope="module")
def engine() -> dict:
    return tomllib.loads(GPU_PROFILE.read_text())["engine"]


@pytest.fixture(scope="module")
def deploy() -> dict:
    return tomllib.loads(GPU_PROFILE.read_text())["deploy"]


def test_docker_dry_run_prints_both_steps_in_the_ngc_image(tmp_path: Path, engine: dict, deploy: dict) -> None:
    hf = hf_checkpoint(tmp_path / "Llama-3.1-8B-Instruct")
    out = tmp_path / "engines" / "llm"
    result = run("--profile", "gpu-h100", "--hf-model", str(hf), "--out", str(out), "--runner", "docker", "--dry-run")
    assert result.returncode == 0, result.stderr
    convert, build = (shlex.split(line) for line in result.stdout.strip().splitlines())
    assert not out.exists(), "a dry run must not create folders"

    for command in (convert, build):
        image_at = command.index(deploy["image"])
        docker = command[:image_at]
        assert docker[:5] == ["docker", "run", "--rm", "--gpus", "all"]
        assert f"--shm-size={deploy['shm_size']}" in docker
        assert "memlock=-1" in docker and "stack=67108864" in docker
        mounts = [docker[i + 1] for i, token in enumerate(docker) if token == "-v"]
        assert mounts == [f"{hf}:/workspace/hf:ro", f"{tmp_path}/engines/llm-checkpoint:/workspace/checkpoint",
                          f"{out}:/workspace/engine"]

    inner = convert[convert.index(deploy["image"]) + 1:]
    assert inner[:2] == ["python3", "/app/examples/models/core/llama/convert_checkpoint.py"]
    assert flags(inner) == {"--model_dir": "/workspace/hf", "--output_dir": "/workspace/checkpoint",
                            "--dtype": engine["dtype"], "--tp_size": str(engine["tp_size"])}

    inner = build[build.index(deploy["image"]) + 1:]
    assert inner[0] == "trtllm-build"
    assert flags(inner) == {
        "--checkpoint_dir": "/workspace/checkpoint",
        "--output_dir": "/workspace/engine",
        "--max_batch_size": str(engine["max_batch_size"]),
        "--max_input_len": str(engine["max_input_len"]),
        "--max_seq_len": str(engine["max_seq_len"]),
        "--max_num_tokens": str(engine["max_num_tokens"]),
        "--kv_cache_type": "paged",
        "--tokens_per_block": str(engine["tokens_per_block"]),
        "--use_paged_context_fmha": "enable",
        "--remove_input_padding": "enable",
        "--gemm_plugin": engine["gemm_plugin"],
        "--workers": str(engine["tp_size"]),
    }


def test_local_runner_uses_host_paths_and_the_qwen_example(tmp_path: Path) -> None:
    hf = hf_checkpoint(tmp_path / "Qwen2.5-7B-Instruct", "Qwen2ForCausalLM", heads=28)
    out, checkpoint = tmp_path / "engine", tmp_path / "ckpt"
    result = run("--hf-model", str(hf), "--out", str(out), "--checkpoint-dir", str(checkpoint),
                 "--runner", "local", "--examples-dir", "/src/TensorRT-LLM/examples", "--dry-run")
    assert result.returncode == 0, result.stderr
    convert, build = (shlex.split(line) for line in result.stdout.strip().splitlines())
    assert convert[:2] == ["python3", "/src/TensorRT-LLM/examples/models/core/qwen/convert_checkpoint.py"]
    assert flags(convert)["--model_dir"] == str(hf) and flags(convert)["--output_dir"] == str(checkpoint)
    assert build[0] == "trtllm-build"
    assert flags(build)["--checkpoint_dir"] == str(checkpoint) and flags(build)["--output_dir"] == str(out)


def test_tensor_parallelism_splits_the_checkpoint_and_builds_one_engine_per_rank(tmp_path: Path) -> None:
    profile = profile_copy(tmp_path, {"tp_size": 4})
    hf = hf_checkpoint(tmp_path / "hf", heads=64)
    result = run("--profile", str(profile), "--hf-model", str(hf), "--out", str(tmp_path / "e"),
                 "--runner", "local", "--dry-run")
    assert result.returncode == 0, result.stderr
    convert, build = (shlex.split(line) for line in result.stdout.strip().splitlines())
    assert flags(convert)["--tp_size"] == "4"
    assert flags(build)["--workers"] == "4"


@pytest.mark.parametrize(("overrides", "chunked", "heads", "message"), [
    ({"tp_size": 3}, None, 32, "'tp_size' 3 does not divide the model's 32 attention heads"),
    ({"tokens_per_block": 48}, None, 32, "'tokens_per_block' must be a power of 2"),
    ({"max_input_len": 8192}, None, 32, "'max_input_len' must be below max_seq_len (8192)"),
    ({"max_num_tokens": 2048}, False, 32, "unless [models.tensorrt_llm.parameters] enable_chunked_context"),
    ({"dtype": "fp4"}, None, 32, "'dtype' must be one of"),
    ({"max_batch_size": "64"}, None, 32, "'max_batch_size' must be an integer"),
    ({"max_beams": 2}, None, 32, "unknown key 'max_beams'"),
])
def test_bad_profile_values_are_refused_naming_the_key(tmp_path: Path, overrides: dict, chunked: bool | None,
                                                       heads: int, message: str) -> None:
    profile = profile_copy(tmp_path, overrides, chunked)
    hf = hf_checkpoint(tmp_path / "hf", heads=heads)
    result = run("--profile", str(profile), "--hf-model", str(hf), "--out", str(tmp_path / "e"), "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_short_token_budget_is_fine_with_chunked_context(tmp_path: Path) -> None:
    profile = profile_copy(tmp_path, {"max_num_tokens": 2048}, chunked_context=True)
    hf = hf_checkpoint(tmp_path / "hf")
    result = run("--profile", str(profile), "--hf-model", str(hf), "--out", str(tmp_path / "e"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "--max_num_tokens 2048" in result.stdout


def test_unsupported_or_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    gpt2 = hf_checkpoint(tmp_path / "gpt2", "GPT2LMHeadModel")
    result = run("--hf-model", str(gpt2), "--out", str(tmp_path / "e"), "--dry-run")
    assert result.returncode == 2 and "architecture GPT2LMHeadModel is not supported" in result.stderr
    result = run("--hf-model", str(tmp_path / "nothing"), "--out", str(tmp_path / "e"), "--dry-run")
    assert result.returncode == 2 and "--hf-model:" in result.stderr and "config.json not found" in result.stderr


def test_a_real_run_executes_the_steps_in_order_and_stops_at_a_failure(tmp_path: Path) -> None:
    """Stand-ins for the NGC tools record their argv: the script must create the folders, run convert then
    build, and return the failing step's exit code."""
    tools, examples = tmp_path / "bin", tmp_path / "examples"
    (examples / "models" / "core" / "llama").mkdir(parents=True)
    log = tmp_path / "calls.log"
    (examples / "models" / "core" / "llama" / "convert_checkpoint.py").write_text(
        f"import sys\nopen({str(log)!r}, 'a').write('convert ' + ' '.join(sys.argv[1:]) + '\\n')\n")
    tools.mkdir()
    trtllm_build = tools / "trtllm-build"
    trtllm_build.write_text(f"#!/bin/sh\necho \"build $*\" >> {log}\nexit ${{BUILD_EXIT:-0}}\n")
    trtllm_build.chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    hf, out = hf_checkpoint(tmp_path / "hf"), tmp_path / "engine"

    result = run("--hf-model", str(hf), "--out", str(out), "--examples-dir", str(examples), env=env)
    assert result.returncode == 0, result.stderr
    assert out.is_dir() and (tmp_path / "engine-checkpoint").is_dir()
    calls = log.read_text().splitlines()
    assert [call.split()[0] for call in calls] == ["convert", "build"]
    assert f"--output_dir {out}" in calls[1]

    result = run("--hf-model", str(hf), "--out", str(out), "--examples-dir", str(examples),
                 env={**env, "BUILD_EXIT": "3"})
    assert result.returncode == 3
    assert "step 2 failed with exit code 3" in result.stderr
