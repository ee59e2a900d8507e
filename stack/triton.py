"""Run the tritonserver binary that nvidia-pytriton bundles, on a rendered model repository."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from stack import install, paths
from stack.ports import free_port
from stack.process import ManagedProcess, ManagedServer


def triton_env() -> dict[str, str]:
    """Environment for the server and its Python stubs: bundled libraries, and this venv's Python first."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [install.library_path(), env.get("LD_LIBRARY_PATH")]))
    env["PATH"] = f"{paths.PYTHON_BIN_DIR}:{env.get('PATH', '')}"
    # Two cores are shared by the engine, the embedder and the clients: keep math libraries single-threaded.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


@dataclass
class TritonServer(ManagedServer):
    """A local Triton server; use as a context manager or call start()/stop()."""

    start_timeout_s: ClassVar[float] = 120.0

    repository: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    model_control_mode: str = "none"
    load_models: tuple[str, ...] = ()
    log_verbose: int = 0
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        log_path = self.log_path or paths.STACK_HOME / "logs" / f"triton-{self.http_port}.log"
        self._process = ManagedProcess("tritonserver", self.argv(), log_path, env=triton_env())

    def argv(self) -> list[str]:
        args = [
            str(paths.TRITON_BIN),
            f"--model-repository={self.repository}",
            f"--backend-directory={paths.BACKENDS_DIR}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            f"--model-control-mode={self.model_control_mode}",
            f"--log-verbose={self.log_verbose}",
        ]
        args += [f"--load-model={name}" for name in self.load_models]
        return args + list(self.extra_args)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout_s: float | None = None) -> TritonServer:
        if not paths.TRITON_BIN.exists():
            raise FileNotFoundError(f"{paths.TRITON_BIN} missing; run `make setup`")
        return super().start(timeout_s)
