"""A child server process with a log file, a readiness probe and a clean stop (SIGTERM, then SIGKILL), and the
server objects built on one (Valkey, Triton, the orchestrator)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self


class ServerStartError(RuntimeError):
    """The server exited or did not become ready in time; the message carries its log tail."""


class ManagedProcess:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, ready: Callable[[], bool], timeout_s: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A new session keeps Ctrl-C in the terminal from reaching the server before we stop it in order.
            self._process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                             start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise ServerStartError(f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the session: children outlive a leader that crashed (Triton's Python stubs do).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ManagedServer:
    """A server run as the ManagedProcess in `_process`: `start()` returns once `ready()` says so (within
    `start_timeout_s` unless told otherwise), `stop()` ends its whole session; a context manager."""

    start_timeout_s: ClassVar[float] = 60.0
    _process: ManagedProcess

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float | None = None) -> Self:
        self._process.start(self.ready, self.start_timeout_s if timeout_s is None else timeout_s)
        return self

    def stop(self) -> None:
        self._process.stop()

    def running(self) -> bool:
        return self._process.running()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def log_path_used(self) -> Path:
        return self._process.log_path

    def log_tail(self, lines: int = 40) -> str:
        return self._process.log_tail(lines)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
