"""`python -m stack up` refuses to start with one line that says what to do: a port in use, a bad setting, a
missing module, a server given by URL that is not there; a model Triton cannot load is named from its log."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stack import serve
from stack.ports import free_port
from stack.serve import ServeError, ServeOptions

#: A line of tritonserver's log when a Python model raises at import (Triton 2.51, abridged).
TRITON_LOG = """I1130 13:18:12.400684 13096 pb_stub.cc:298]  Failed to initialize Python stub for auto-complete
E1130 13:18:12.403944 13079 model_lifecycle.cc:642] "failed to load 'embedding' version 1: Internal: \
RuntimeError: boom\\n\\nAt:\\n  /models/embedding/1/model.py(4): <module>\\n"
I1130 13:18:12.403981 13079 model_lifecycle.cc:777] "failed to load 'embedding'"
error: creating server: Internal - failed to load all models
"""


def stack_up(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("ORCH_")}
    return subprocess.run([sys.executable, "-m", "stack", "up", *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_a_port_in_use_is_one_line_naming_the_option() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        assert serve.port_in_use("127.0.0.1", busy)
        result = stack_up("--http-port", str(busy), "--grpc-port", str(free_port()))
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert f"port {busy}" in line and "--http-port" in line and "in use" in line
    assert not serve.port_in_use("127.0.0.1", busy)  # closed again


def test_an_unknown_setting_is_one_line_before_anything_starts() -> None:
    result = stack_up("--http-port", str(free_port()), env={"ORCH_CACHE__TTL": "60"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration: unknown setting ORCH_CACHE__TTL in the environment; did you mean ORCH_CACHE__TTL_S?"]


def test_a_missing_module_names_it_and_make_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None if name == "xllamacpp" else real(name))
    with pytest.raises(ServeError, match=r"missing Python module xllamacpp \(for triton\): run `make setup`"):
        serve.check_modules(ServeOptions())
    serve.check_modules(ServeOptions(triton_url="127.0.0.1:8001"))  # not needed when Triton is the user's


def test_servers_given_by_url_must_answer() -> None:
    nothing = free_port()
    with pytest.raises(ServeError, match=f"no Redis answers at --redis-url redis://127.0.0.1:{nothing}/0"):
        serve.check_redis(f"redis://127.0.0.1:{nothing}/0")
    with pytest.raises(ServeError, match=f"no Triton answers at --triton-url 127.0.0.1:{nothing}"):
        serve.check_triton(f"127.0.0.1:{nothing}", "tensorrt_llm_bls")


def test_a_model_triton_cannot_load_is_named_with_its_reason(tmp_path: Path) -> None:
    message = serve.triton_failure(TRITON_LOG, tmp_path / "triton.log")
    assert message.startswith("Triton failed to load model 'embedding': Internal: RuntimeError: boom — fix")
    assert "\n" not in message and str(tmp_path / "triton.log") in message
    assert serve.triton_failure("E1130 something else broke\n", tmp_path / "t.log").startswith(
        "Triton did not become ready: E1130 something else broke")


def test_each_run_keeps_the_previous_log(tmp_path: Path) -> None:
    first = serve.fresh_log(tmp_path, "triton")
    first.write_text("run 1\n")
    second = serve.fresh_log(tmp_path, "triton")
    assert second == first and not second.exists() and (tmp_path / "triton.log.1").read_text() == "run 1\n"


def test_servers_started_before_the_orchestrator_never_take_its_ports(monkeypatch) -> None:
    from stack import ports

    handed_out = iter([8000, 8000, 50051, 41234])
    monkeypatch.setattr(ports.socket.socket, "getsockname", lambda self: ("127.0.0.1", next(handed_out)))
    assert ports.free_port(avoid={8000, 50051}) == 41234
