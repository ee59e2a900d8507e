"""`python -m stack up` (what `make serve` runs) as a user runs it: a child process on free ports that starts
Valkey, Triton and the orchestrator, answers over HTTP (openai SDK) and gRPC (the committed stubs), stops every
process it started on SIGINT, and keeps the cache across a restart over the same data folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import openai
import pytest

from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2 as pb
from orchestrator.api.proto.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from orchestrator.config import ModelSettings
from stack.ports import free_port

pytestmark = pytest.mark.integration
MODEL = ModelSettings().name
QUESTION = "Which planet is known as the red planet?"
START_TIMEOUT_S = 400


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid`: pid → start time (so a reused pid is not mistaken for it)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found, todo = {}, [pid]
    while todo:
        for child, started in children.get(todo.pop(), []):
            found[child] = started
            todo.append(child)
    return found


def still_running(processes: dict[int, int]) -> list[int]:
    return [pid for pid, started in processes.items()
            if (stat := proc_stat(pid)) is not None and stat[2] == started and stat[1] != "Z"]


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@dataclass
class Served:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    out: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1"

    def output(self) -> str:
        return self.out.read_text()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as response:
                return response.status == 200 and "Serving." in self.output()
        except (urllib.error.URLError, OSError):
            return False


@contextlib.contextmanager
def stack_up(data_dir: Path, run_dir: Path, http_port: int, grpc_port: int) -> Iterator[Served]:
    """`python -m stack up` until the block ends, then SIGINT; checks that it exits 0 having stopped everything
    it started."""
    run_dir.mkdir(parents=True)
    out = run_dir / "stdout"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ORCH_")}
    with out.open("w") as stdout, (run_dir / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "stack", "up", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--data-dir", str(data_dir), "--log-dir", str(run_dir / "logs")],
            stdout=stdout, stderr=stderr, env=env)
    served = Served(process, http_port, grpc_port, out)
    started: dict[int, int] = {}
    try:
        wait_until(lambda: served.ready() or process.poll() is not None, START_TIMEOUT_S, "the stack to serve")
        assert process.poll() is None, f"stack up exited:\n{(run_dir / 'stderr').read_text()}"
        started = descendants(process.pid)
        commands = " | ".join(command_line(pid) for pid in started)
        for server in ("valkey-server", "tritonserver", "triton_python_backend_stub", "-m orchestrator serve"):
            assert server in commands, f"{server} not among the processes stack up started: {commands}"
        yield served
    finally:
        if process.poll() is None:
            started = started or descendants(process.pid)
            process.send_signal(signal.SIGINT)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, (run_dir / "stderr").read_text()
    assert "stopped the orchestrator, Triton, Valkey" in served.output()
    assert still_running(started) == [], "left running: " + ", ".join(command_line(p) for p in still_running(started))


def ask_http(served: Served) -> tuple[str, str]:
    client = openai.OpenAI(base_url=served.base_url, api_key="local", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=16, temperature=0)
    return raw.headers["x-cache"], raw.parse().choices[0].message.content


@pytest.mark.timeout(1200)
def test_serve_answers_stops_everything_and_keeps_the_cache_across_a_restart(tmp_path: Path) -> None:
    data_dir, http_port, grpc_port = tmp_path / "data", free_port(), free_port()
    with stack_up(data_dir, tmp_path / "first", http_port, grpc_port) as served:
        banner = served.output()
        for shown in (served.base_url, f"127.0.0.1:{grpc_port}", "curl ", "openai.OpenAI(", "grpcurl -plaintext",
                      "open mode", str(tmp_path / "first" / "logs" / "triton.log"), str(data_dir)):
            assert shown in banner
        layer, answer = ask_http(served)
        assert layer == "miss" and answer
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = pb_grpc.OrchestratorStub(channel).Generate(pb.GenerateRequest(
                model=MODEL, messages=[pb.ChatMessage(role="user", content=QUESTION)],
                params=pb.SamplingParams(max_tokens=16, temperature=0)), timeout=60)
        assert reply.cache.layer == pb.CACHE_LAYER_EXACT and reply.text == answer  # the HTTP answer, over gRPC

    assert (data_dir / "appendonlydir").is_dir()
    with stack_up(data_dir, tmp_path / "second", http_port, grpc_port) as served:
        assert ask_http(served) == ("exact", answer)
