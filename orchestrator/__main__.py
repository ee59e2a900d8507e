"""`python -m orchestrator serve`: the orchestrator's HTTP (OpenAI-compatible) and gRPC APIs in one process.
`python -m orchestrator config`: the configuration `serve` would run with, secrets masked.

Configuration comes from the environment (ORCH_*, see orchestrator.config) or an env file; the options below
override the most common values. An unknown ORCH_* name or a bad value stops both commands with one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

EnvFile = Annotated[Optional[Path], typer.Option(help="Read ORCH_* settings from this file too")]
Host = Annotated[Optional[str], typer.Option(help="Address both APIs bind to")]
HttpPort = Annotated[Optional[int], typer.Option(help="HTTP (OpenAI API) port")]
GrpcPort = Annotated[Optional[int], typer.Option(help="gRPC port")]
TritonUrl = Annotated[Optional[str], typer.Option(help="Triton gRPC address, host:port")]
RedisUrl = Annotated[Optional[str], typer.Option(help="redis:// URL of the cache")]


@app.callback()
def main() -> None:
    """The caching orchestrator in front of Triton."""


def load_settings(env_file: Path | None, host: str | None = None, http_port: int | None = None,
                  grpc_port: int | None = None, triton_url: str | None = None, redis_url: str | None = None):
    """Settings from the environment and `env_file`, with the command-line overrides; a configuration error
    ends the command with one line on stderr (exit status 2)."""
    from pydantic import ValidationError

    from orchestrator.config import Settings, UnknownSettingError, describe_validation_error

    if env_file is not None and not env_file.is_file():
        _fail(f"env file {env_file} not found")
    overrides = {"api": {"host": host, "http_port": http_port, "grpc_port": grpc_port},
                 "triton": {"url": triton_url}, "redis": {"url": redis_url}}
    try:
        settings = Settings(_env_file=env_file) if env_file else Settings()
    except UnknownSettingError as error:
        _fail(str(error))
    except ValidationError as error:
        _fail(describe_validation_error(error))
    data = settings.model_dump()
    for name, fields in overrides.items():
        data[name].update({field: value for field, value in fields.items() if value is not None})
    try:  # validated like the environment's values
        return Settings.model_validate(data)
    except ValidationError as error:
        _fail(describe_validation_error(error))


def _fail(message: str) -> None:
    typer.secho(f"configuration: {message}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def serve(env_file: EnvFile = None, host: Host = None, http_port: HttpPort = None, grpc_port: GrpcPort = None,
          triton_url: TritonUrl = None, redis_url: RedisUrl = None,
          log_level: Annotated[str, typer.Option(help="Python log level")] = "info") -> None:
    """Serve the HTTP and gRPC APIs until SIGINT/SIGTERM."""
    import uvloop

    from orchestrator.api.server import serve as serve_apis

    settings = load_settings(env_file, host, http_port, grpc_port, triton_url, redis_url)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvloop (what uvicorn itself picks when installed): grpc.aio and uvicorn both run faster on it.
    uvloop.run(serve_apis(settings))


@app.command()
def config(env_file: EnvFile = None, host: Host = None, http_port: HttpPort = None, grpc_port: GrpcPort = None,
           triton_url: TritonUrl = None, redis_url: RedisUrl = None,
           format: Annotated[str, typer.Option(help="json, or env (ORCH_<SECTION>__<FIELD>=value lines)")] = "json",
           ) -> None:
    """Print the effective configuration (defaults, environment, env file, options), secrets masked."""
    import json

    from orchestrator.config import masked_settings, setting_lines

    if format not in ("json", "env"):
        _fail(f"--format {format!r}: use json or env")
    shown = masked_settings(load_settings(env_file, host, http_port, grpc_port, triton_url, redis_url))
    typer.echo(json.dumps(shown, indent=2) if format == "json" else "\n".join(setting_lines(shown)))


if __name__ == "__main__":
    app()
