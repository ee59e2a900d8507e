"""scripts/gpu_smoke.sh without a GPU: the dry run prints every command from the profile and runs none; a real run
with stand-ins for docker and curl builds in order, notices a Triton that exits, and stops what it started; the
client half fails on an error, an empty answer or an unexpected cache layer."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest
from rich.console import Console

from stack import paths

SCRIPT = paths.PROJECT_ROOT / "scripts" / "gpu_smoke.sh"
GPU_PROFILE = tomllib.loads((paths.PROFILES_DIR / "gpu-h100.toml").read_text())
SERVING_IMAGE = GPU_PROFILE["deploy"]["serving_image"]


def hf_chat_model(folder: Path) -> Path:
    """A Qwen-like checkpoint folder: config, tokenizer, the chat template inside tokenizer_config.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"], "num_attention_heads": 14}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def stand_ins(folder: Path) -> tuple[dict[str, str], Path]:
    """`docker` and `curl` that record their arguments: Triton's `docker run --name` fails at once with a log
    line, every other docker call succeeds; curl never finds Triton ready."""
    folder.mkdir()
    calls = folder / "calls.log"
    (folder / "docker").write_text(f"""#!/bin/sh
echo "docker $*" >> {calls}
case " $* " in
  *" run "*" --name "*) echo "tritonserver: failed to load 'tensorrt_llm'"; exit 1 ;;
esac
exit 0
""")
    (folder / "curl").write_text(f"#!/bin/sh\necho \"curl $*\" >> {calls}\nexit 7\n")
    for tool in ("docker", "curl"):
        (folder / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}, calls


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)


def commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in stdout.splitlines() if line and not line.startswith("==>")]


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_dry_run_prints_the_build_launch_and_client_commands_and_runs_nothing(tmp_path: Path) -> None:
    hf = tmp_path / "Qwen2.5-0.5B-Instruct"  # need not exist for a dry run
    env, calls = stand_ins(tmp_path / "bin")
    work = tmp_path / "work"
    result = run("--dry-run", "--hf-model", str(hf), "--work", str(work), env=env)
    assert result.returncode == 0, result.stderr
    assert not calls.exists() and not work.exists()
    build, image, launch, ready, client = commands(result.stdout)

    assert build[0] == str(paths.PROJECT_ROOT / "scripts" / "build_engine.sh")
    engine_mount = GPU_PROFILE["deploy"]["engine_mount"]
    engine_subdir = GPU_PROFILE["models"]["tensorrt_llm"]["parameters"]["gpt_model_path"][len(engine_mount) + 1:]
    assert flag(build, "--hf-model") == str(hf)
    assert flag(build, "--out") == f"{work}/engines/{engine_subdir}"

    assert image == ["docker", "build", "-f", str(paths.PROJECT_ROOT / "deploy" / "triton.Dockerfile"), "-t",
                     SERVING_IMAGE, str(paths.PROJECT_ROOT)]

    assert launch[:2] == [str(paths.PROJECT_ROOT / "scripts" / "launch_triton.sh"), "--gpu"]
    assert flag(launch, "--image") == SERVING_IMAGE
    assert flag(launch, "--engine-dir") == f"{work}/engines"
    assert flag(launch, "--tokenizer-dir") == str(hf)  # Triton and the orchestrator read the same folder
    assert flag(launch, "--name").startswith("llm-stack-gpu-smoke-")
    assert ready == ["curl", "-sf", "http://127.0.0.1:8000/v2/health/ready"]

    assert client[1] == str(paths.PROJECT_ROOT / "scripts" / "gpu_smoke_client.py")
    assert flag(client, "--triton-url") == "127.0.0.1:8001"
    assert flag(client, "--model-name") == "Qwen2.5-0.5B-Instruct"
    assert flag(client, "--tokenizer-dir") == str(hf)


def test_ports_image_and_model_name_are_passed_through(tmp_path: Path) -> None:
    result = run("--dry-run", "--hf-model", str(tmp_path / "m"), "--model-name", "qwen-small", "--image", "reg/t:1",
                 "--http-port", "9000", "--grpc-port", "9001", "--metrics-port", "9002")
    assert result.returncode == 0, result.stderr
    _, image, launch, ready, client = commands(result.stdout)
    assert flag(image, "-t") == "reg/t:1" and flag(launch, "--image") == "reg/t:1"
    assert (flag(launch, "--http-port"), flag(launch, "--grpc-port"), flag(launch, "--metrics-port")) == (
        "9000", "9001", "9002")
    assert ready[-1] == "http://127.0.0.1:9000/v2/health/ready"
    assert flag(client, "--triton-url") == "127.0.0.1:9001" and flag(client, "--model-name") == "qwen-small"


@pytest.mark.parametrize(("args", "message"), [
    ((), "--hf-model DIR is required"),
    (("--hf-model",), "--hf-model needs a value"),
    (("--hf-model", "m", "--profile", "nonexistent"), "nonexistent.toml not found"),
    (("--hf-model", "m", "--bogus"), "unknown argument --bogus"),
])
def test_bad_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    result = run("--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_run_stops_when_triton_exits_and_cleans_up(tmp_path: Path) -> None:
    """The real sequence with docker and curl stood in for: engine build (two docker runs), image build,
    Triton's container; that container exits, so the script fails with Triton's log and still stops the
    container by name."""
    hf = hf_chat_model(tmp_path / "Qwen2.5-0.5B-Instruct")
    env, calls = stand_ins(tmp_path / "bin")
    repository = tmp_path / "repository"
    (repository / "embedding").mkdir(parents=True)
    work = tmp_path / "work"
    result = run("--hf-model", str(hf), "--work", str(work), "--repository", str(repository), env=env, timeout=120)

    assert result.returncode == 1
    assert "Triton exited before it was ready" in result.stderr
    assert "failed to load 'tensorrt_llm'" in result.stderr  # the end of Triton's log
    docker = [shlex.split(line)[1:3] for line in calls.read_text().splitlines() if line.startswith("docker")]
    assert docker[:3] == [["run", "--rm"], ["run", "--rm"], ["build", "-f"]]
    runs = [line for line in calls.read_text().splitlines() if " --name " in line]
    name = flag(shlex.split(runs[0]), "--name")
    assert f"-v {repository}:/models:ro" in runs[0] and SERVING_IMAGE in runs[0]
    assert f"-v {hf}:{GPU_PROFILE['deploy']['tokenizer_mount']}:ro" in runs[0]
    assert calls.read_text().splitlines()[-1] == f"docker stop --time 30 {name}"
    assert (work / "engines" / "llm").is_dir()  # created by build_engine.sh, not by docker (root-owned)


def smoke_client():
    """scripts/gpu_smoke_client.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("gpu_smoke_client", SCRIPT.with_name("gpu_smoke_client.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Completions:
    """Answers each request from the layer given for it (or raises), recording the model asked for."""

    def __init__(self, layers: list[str | Exception]) -> None:
        self.layers, self.models = iter(layers), []

    def create(self, model: str, **_: object) -> SimpleNamespace:
        self.models.append(model)
        layer = next(self.layers)
        if isinstance(layer, Exception):
            raise layer
        message = SimpleNamespace(content="" if layer == "empty" else "Paris.")
        return SimpleNamespace(model_extra={"cache": {"layer": "miss" if layer == "empty" else layer}},
                               choices=[SimpleNamespace(message=message)])


def test_client_fails_on_an_error_an_empty_answer_or_an_unexpected_layer() -> None:
    module = smoke_client()
    expected = [step.expect for step in module.STEPS]
    console = Console(file=io.StringIO(), width=200)

    completions = Completions(expected)
    assert module.converse(SimpleNamespace(chat=SimpleNamespace(completions=completions)), "qwen", console) == []
    assert completions.models == ["qwen"] * len(expected)

    broken = list(expected)
    broken[1] = "miss"  # the repeat missed the exact cache
    broken[3] = "empty"
    broken[5] = openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))
    client = SimpleNamespace(chat=SimpleNamespace(completions=Completions(broken)))
    problems = module.converse(client, "qwen", console)
    assert len(problems) == 3
    assert problems[0] == f"#2 {module.STEPS[1].label}: answered from 'miss', expected 'exact'"
    assert problems[1] == f"#4 {module.STEPS[3].label}: empty answer"
    assert problems[2].startswith(f"#6 {module.STEPS[5].label}: answered from 'error: Connection error")
    assert "Paris." in console.file.getvalue()
