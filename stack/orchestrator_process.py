"""`python -m orchestrator serve` as a child process on chosen (or free) ports, loopback by default: what the
e2e tests, the benchmarks, the demo and `make serve` start, so clients and server do not share one Python
interpreter. Part of the local runtime (it runs the orchestrator, which knows nothing of it)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stack import paths
from stack.ports import free_port
from stack.process import ManagedProcess, ManagedServer


@dataclass
class OrchestratorProcess(ManagedServer):
    """Use as a context manager; `env` adds ORCH_* settings (keys, key prefix, thresholds, ...)."""

    triton_url: str
    redis_url: str
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    #: Started means ready (Triton and Redis reachable); "/healthz" only waits for the process to listen.
    wait_for: str = "/readyz"
    #: The address both APIs bind to.
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        argv = [sys.executable, "-m", "orchestrator", "serve", "--host", self.host,
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--triton-url", self.triton_url, "--redis-url", self.redis_url]
        log_path = self.log_path or paths.STACK_HOME / "logs" / f"orchestrator-{self.http_port}.log"
        self._process = ManagedProcess("orchestrator", argv, log_path, env={**os.environ, **self.env})

    @property
    def connect_host(self) -> str:
        """Where a client on this machine reaches the APIs (loopback when they bind to every address)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def http_url(self) -> str:
        return f"http://{self.connect_host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.connect_host}:{self.grpc_port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}{self.wait_for}", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
