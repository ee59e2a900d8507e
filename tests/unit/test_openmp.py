"""llama.cpp's OpenMP threads sleep at a barrier instead of spinning (cpu_engine.openmp): the spin count comes
from the engine config and reaches libgomp's environment before xllamacpp loads libgomp."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cpu_engine import openmp
from cpu_engine.config import ConfigError, EngineConfig


def test_the_spin_count_defaults_to_sleeping_at_once_and_can_be_set() -> None:
    assert EngineConfig.from_model_config({"max_batch_size": 4}).spin_count == 0
    given = EngineConfig.from_model_config({"max_batch_size": 4, "parameters": {
        "cpu_spin_count": {"string_value": "300000"}}})
    assert given.spin_count == 300_000
    with pytest.raises(ConfigError, match="cpu_spin_count=-1 must be >= 0"):
        EngineConfig.from_model_config({"max_batch_size": 4, "parameters": {"cpu_spin_count": {"string_value": "-1"}}})


def test_libgomp_is_found_in_the_process_maps(tmp_path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0\n")
    assert openmp.libgomp_loaded(maps)
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert not openmp.libgomp_loaded(maps)
    assert not openmp.libgomp_loaded(tmp_path / "absent")


def test_a_spin_count_too_late_for_a_loaded_libgomp_is_said(monkeypatch, caplog) -> None:
    monkeypatch.setenv(openmp.SPIN_COUNT_VARIABLE, "300000")
    monkeypatch.setattr(openmp, "libgomp_loaded", lambda: True)
    with caplog.at_level(logging.WARNING, logger="cpu_engine.openmp"):
        openmp.set_spin_count(300000)  # the value in force: nothing to say
        assert not caplog.records
        openmp.set_spin_count(0)
    assert "GOMP_SPINCOUNT=300000" in caplog.text and os.environ[openmp.SPIN_COUNT_VARIABLE] == "0"


def test_llama_params_sets_the_spin_count_before_xllamacpp_loads_libgomp(tmp_path) -> None:
    """In a fresh process, as in Triton's stub: libgomp is not loaded before, and is loaded with the value."""
    script = textwrap.dedent("""
        import os
        from cpu_engine import openmp
        from cpu_engine.config import EngineConfig
        from cpu_engine.engine import llama_params
        assert not openmp.libgomp_loaded(), "libgomp loaded before the engine"
        config = EngineConfig.from_model_config({"max_batch_size": 2, "parameters": {
            "cpu_spin_count": {"string_value": "1234"}}})
        llama_params(config)
        print(openmp.libgomp_loaded(), os.environ["GOMP_SPINCOUNT"])
    """)
    env = {key: value for key, value in os.environ.items() if key != openmp.SPIN_COUNT_VARIABLE}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "1234"]
