"""Shared by the LLM benchmarks (imported as `llm_bench` from the scripts next to it): a CPU-profile repository with per-run overrides, and small statistics.

Overrides go through stack.render (the profile's values are changed before rendering and the result is
validated like any profile), never by editing rendered config text.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from stack.render import load_profile, profile_path, render_model, write_repository

LLM_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble")
MACHINE = "2 cores, Debian 12, Python 3.11.7, CPU only"


def render_llm_repository(out_dir: Path, overrides: dict[str, dict] | None = None, profile: str = "cpu",
                          models: tuple[str, ...] = LLM_MODELS) -> Path:
    """Render the profile's LLM models with values replaced: {"tensorrt_llm": {"max_batch_size": 2,
    "parameters": {"gpt_model_type": "V1"}}}."""
    path = profile_path(profile)
    data = load_profile(path)
    rendered = []
    for name in models:
        values = copy.deepcopy(data["models"][name])
        for key, value in (overrides or {}).get(name, {}).items():
            if key == "parameters":
                values.setdefault("parameters", {}).update(value)
            else:
                values[key] = value
        rendered.append(render_model(path, name, values))
    return write_repository(rendered, out_dir)


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 1)


def median_ms(samples: list[float]) -> float:
    return round(float(np.median(samples)) * 1000, 1)


def session_cpu_s(session_id: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a session: a ManagedProcess server
    and its children (Triton's Python stubs), which start_new_session makes one session."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # after "pid (comm)": state ppid pgrp session ... utime(12) stime(13)
            total += int(fields[11]) + int(fields[12])
    return total / tick
