"""`python -m stack`: set up, render, launch and demo the local stack."""

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


def gpu_command(profile: dict, repository: Path, engine_dir: Path, tokenizer_dir: Path, http_port: int,
                grpc_port: int, metrics_port: int, image: str | None = None) -> list[str]:
    """`docker run` of the profile's NGC image (or `image`) on a rendered repository, with the engine, the
    tokenizer and this checkout's Python packages (imported by the Python-backend models) mounted.

    With tensor parallelism (`[engine] tp_size` > 1) one tritonserver per rank runs under mpirun in leader
    mode, as upstream's launch_triton_server.py does: rank 0 serves every model, the other ranks load only
    `tensorrt_llm`, each Python backend with its own shared-memory prefix.
    """
    deploy, tp_size = profile["deploy"], profile["engine"]["tp_size"]
    docker = [
        "docker", "run", "--rm", "--gpus", "all", f"--shm-size={deploy['shm_size']}",
        "--ulimit", "memlock=-1", "--ulimit", "stack=67108864",
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
    tokenizer_dir: Annotated[Path | None, typer.Option(help="--gpu: the model's Hugging Face tokenizer files")] = None,
    image: Annotated[str | None, typer.Option(help="--gpu: image to run (default: the profile's [deploy] image)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the command, start nothing")] = False,
) -> None:
    """Start Triton on a rendered repository, wait until ready, serve until Ctrl-C, then stop it cleanly."""
    from stack.render import load_profile, profile_path, render as render_repository
    from stack.triton import TritonServer

    profile = profile or ("gpu-h100" if gpu else "cpu")
    if repository is None:
        repository = render_repository(profile, paths.STACK_HOME / "repository" / profile)
    if gpu:
        command = gpu_command(load_profile(profile_path(profile)), repository,
                              engine_dir or paths.STACK_HOME / "engines" / profile,
                              tokenizer_dir or paths.STACK_HOME / "tokenizers" / profile, http_port, grpc_port,
                              metrics_port, image)
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
