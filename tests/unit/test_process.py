"""ManagedProcess.stop also reaps what a crashed server left behind in its session."""

from __future__ import annotations

import time
from pathlib import Path

from stack.process import ManagedProcess


def alive(pid: int) -> bool:
    """Running (a killed orphan may linger as a zombie until init reaps it: that counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_stop_kills_the_children_of_a_leader_that_already_died(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    # The leader starts a long-lived child in its session (as Triton starts its Python stubs), then dies.
    script = f"sleep 300 & echo $! > {child_pid}; sleep 1; exit 3"
    server = ManagedProcess("leader", ["bash", "-c", script], tmp_path / "leader.log")
    server.start(ready=lambda: child_pid.exists() and child_pid.read_text().strip() != "", timeout_s=10)
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 10
    while server.running():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert alive(pid)  # orphaned, still running
    server.stop()
    deadline = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < deadline, "the orphaned child survived stop()"
        time.sleep(0.05)
