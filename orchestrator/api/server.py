"""Both APIs around one service on one event loop: uvicorn serving the FastAPI app, and the grpc.aio server.

`serve()` is what `python -m orchestrator serve` runs (until SIGINT/SIGTERM); `BackgroundOrchestrator` runs the
same thing in a thread with its own event loop, for the demo, benchmarks and tests that drive it with
blocking clients from the calling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

import uvicorn

from orchestrator.api.auth import Authenticator
from orchestrator.api.context import GenerationService, ServedModels
from orchestrator.api.grpc_server import GrpcServer
from orchestrator.api.http import create_app
from orchestrator.config import Settings

log = logging.getLogger(__name__)


class _UvicornServer(uvicorn.Server):
    """Leaves signal handling to serve(), which must stop gRPC and close the service after HTTP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServers:
    def __init__(self, service: GenerationService, settings: Settings) -> None:
        api = settings.api
        auth = Authenticator.from_settings(api)
        models = ServedModels(generation=(settings.model.name,), embedding=settings.triton.embedding_model)
        self.host = api.host
        self.app = create_app(service, auth, models)
        self.grpc = GrpcServer(service, auth, models, api.host, api.grpc_port, api.health_interval_s)
        self.http = _UvicornServer(uvicorn.Config(self.app, host=api.host, port=api.http_port, lifespan="off",
                                                  log_config=None, log_level=api.log_level,
                                                  access_log=api.access_log))
        self._http_task: asyncio.Task | None = None
        if auth.open_mode:
            log.warning("open mode: requests without an API key are served as tenant %r", api.open_tenant)

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int:
        return self.http.servers[0].sockets[0].getsockname()[1]

    async def start(self) -> None:
        await self.grpc.start()
        self._http_task = asyncio.create_task(self.http.serve())
        while not self.http.started:
            if self._http_task.done():
                await self.grpc.stop(0)
                # uvicorn exits (SystemExit) when it cannot bind; say so plainly.
                raise RuntimeError(f"HTTP server failed to start on {self.host}:{self.http.config.port}")
            await asyncio.sleep(0.01)
        log.info("serving HTTP on %s:%d and gRPC on %s:%d", self.host, self.http_port, self.host, self.grpc_port)

    async def stop(self, grace_s: float = 5.0) -> None:
        self.http.should_exit = True
        if self._http_task is not None:
            with contextlib.suppress(SystemExit):
                await self._http_task
        await self.grpc.stop(grace_s)


async def serve(settings: Settings, ready: Callable[[ApiServers], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Create the service, serve both APIs until `stop` is set (or SIGINT/SIGTERM), then close everything."""
    from orchestrator.service import CachedLLMService

    stop = stop or _stop_on_signals()
    service = await CachedLLMService.create(settings)
    try:
        servers = ApiServers(service, settings)
        await servers.start()
        try:
            if ready is not None:
                ready(servers)
            await stop.wait()
        finally:
            await servers.stop()
    finally:
        await service.aclose()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


class BackgroundOrchestrator:
    """The orchestrator (service + both APIs) in a thread: `with BackgroundOrchestrator(settings) as orch:` then
    talk to `orch.http_url` / `orch.grpc_target`. Ports 0 in `settings.api` pick free ones."""

    def __init__(self, settings: Settings, start_timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.start_timeout_s = start_timeout_s
        self.http_port = self.grpc_port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="orchestrator", daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.api.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.settings.api.host}:{self.grpc_port}"

    def __enter__(self) -> BackgroundOrchestrator:
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise TimeoutError(f"orchestrator not serving after {self.start_timeout_s:.0f} s")
        if self._error is not None:
            raise RuntimeError("orchestrator failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(self.settings, ready=self._started, stop=self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the thread that waits in __enter__
            self._error = exc
        finally:
            self._ready.set()

    def _started(self, servers: ApiServers) -> None:
        self.http_port, self.grpc_port = servers.http_port, servers.grpc_port
        self._ready.set()
