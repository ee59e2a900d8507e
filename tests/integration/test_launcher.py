"""scripts/launch_triton.sh: starts the bundled Triton, reports ready, stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from stack import paths
from stack.ports import free_port
from stack.render import load_profile, profile_path

LAUNCHER = paths.PROJECT_ROOT / "scripts" / "launch_triton.sh"


def test_start_ready_and_clean_stop(tmp_path: Path, triton_repository: Path) -> None:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [str(LAUNCHER), "--repository", str(triton_repository), "--http-port", str(http_port),
         "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        ready_line = process.stdout.readline()
        assert f"Triton ready: HTTP 127.0.0.1:{http_port}" in ready_line, ready_line
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Triton stopped" in output
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=1)
        except OSError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("Triton still answers after the launcher stopped")


def test_gpu_dry_run_prints_the_container_command(tmp_path: Path) -> None:
    """gpu-h100 holds the embedding model, so it runs in the serving image built on the NGC one (the stock image
    is refused: tests/unit/test_deploy.py)."""
    image = load_profile(profile_path("gpu-h100"))["deploy"]["serving_image"]
    result = subprocess.run([str(LAUNCHER), "--gpu", "--profile", "gpu-h100", "--image", image, "--dry-run"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1]
    assert command.startswith("docker run ") and "--gpus all" in command
    assert f" {image} " in command and "--model-repository=/models" in command


def test_cpu_dry_run_prints_the_tritonserver_command(triton_repository: Path) -> None:
    result = subprocess.run([str(LAUNCHER), "--repository", str(triton_repository), "--dry-run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tritonserver --model-repository=" in result.stdout
    assert "--allow-gpu-metrics=false" in result.stdout
