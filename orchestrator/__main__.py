"""`python -m orchestrator serve`: the orchestrator's HTTP (OpenAI-compatible) and gRPC APIs in one process.

Configuration comes from the environment (ORCH_*, see orchestrator.config) or an env file; the options below
override the most common values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
import uvloop

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def main() -> None:
    """The caching orchestrator in front of Triton."""


@app.command()
def serve(
    env_file: Annotated[Optional[Path], typer.Option(help="Read ORCH_* settings from this file too")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address both APIs bind to")] = None,
    http_port: Annotated[Optional[int], typer.Option(help="HTTP (OpenAI API) port")] = None,
    grpc_port: Annotated[Optional[int], typer.Option(help="gRPC port")] = None,
    triton_url: Annotated[Optional[str], typer.Option(help="Triton gRPC address, host:port")] = None,
    redis_url: Annotated[Optional[str], typer.Option(help="redis:// URL of the cache")] = None,
    log_level: Annotated[str, typer.Option(help="Python log level")] = "info",
) -> None:
    """Serve the HTTP and gRPC APIs until SIGINT/SIGTERM."""
    from orchestrator.api.server import serve as serve_apis
    from orchestrator.config import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(_env_file=env_file) if env_file else Settings()
    sections = {"api": {"host": host, "http_port": http_port, "grpc_port": grpc_port},
                "triton": {"url": triton_url}, "redis": {"url": redis_url}}
    updates = {}
    for name, fields in sections.items():
        given = {field: value for field, value in fields.items() if value is not None}
        if given:
            updates[name] = getattr(settings, name).model_copy(update=given)
    # uvloop (what uvicorn itself picks when installed): grpc.aio and uvicorn both run faster on it.
    uvloop.run(serve_apis(settings.model_copy(update=updates)))


if __name__ == "__main__":
    app()
