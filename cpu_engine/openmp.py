"""How llama.cpp's threads wait for each other: libgomp's spin count, set before libgomp is loaded.

xllamacpp builds ggml's CPU backend with OpenMP (libgomp): at every node of the compute graph the engine's
threads meet at a barrier, and a thread that arrives first spins `GOMP_SPINCOUNT` times (300,000 by default)
before it sleeps. While another process holds a core, one engine thread is descheduled and its partner spins
through its own time slice at each of the hundreds of barriers per step: with one busy core the service fell
from ~40 to ~1.7 tokens/s (docs/benchmarks.md, CPU contention). llama.cpp's own `poll` level does not help
there: it governs ggml's threadpool, which an OpenMP build does not use.

libgomp reads its environment once, when it is loaded, so the value has to be in the environment before
xllamacpp is first imported in the process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

SPIN_COUNT_VARIABLE = "GOMP_SPINCOUNT"


def libgomp_loaded(maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether libgomp is already mapped into this process (then its spin count is fixed)."""
    try:
        return "libgomp" in maps.read_text()
    except OSError:
        return False


def set_spin_count(spin_count: int) -> None:
    """Make llama.cpp's OpenMP threads spin `spin_count` times before sleeping at a barrier (0: sleep at once).
    Warns when libgomp was loaded earlier with another value, which then stays in force."""
    value = str(spin_count)
    if os.environ.get(SPIN_COUNT_VARIABLE) != value and libgomp_loaded():
        log.warning("libgomp is already loaded with %s=%s; cpu_spin_count=%s applies from the next process",
                    SPIN_COUNT_VARIABLE, os.environ.get(SPIN_COUNT_VARIABLE, "its default"), value)
    os.environ[SPIN_COUNT_VARIABLE] = value
