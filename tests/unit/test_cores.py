"""The engine's thread count follows the cores the process may use, not the machine's."""

from __future__ import annotations

import os

from cpu_engine import cores
from cpu_engine.config import EngineConfig


def test_cgroup_quotas_in_cores() -> None:
    assert cores.quota_cores("max 100000\n") is None
    assert cores.quota_cores("150000 100000\n") == 1.5
    assert cores.quota_cores(None, "-1", "100000") is None
    assert cores.quota_cores(None, "200000", "100000") == 2.0


def test_available_cores_is_the_affinity_capped_by_the_quota(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cores, "_read", lambda path: "150000 100000" if path == cores.CGROUP_V2_MAX else None)
    assert cores.available_cores() == 1
    monkeypatch.setattr(cores, "_read", lambda path: None)
    assert cores.available_cores() == 4


def test_engine_threads_default_to_the_available_cores_and_can_be_set(monkeypatch) -> None:
    monkeypatch.setattr("cpu_engine.config.available_cores", lambda: 3)
    derived = EngineConfig.from_model_config({"max_batch_size": 4})
    assert (derived.threads, derived.batch_threads) == (3, 3)
    given = EngineConfig.from_model_config({"max_batch_size": 4, "parameters": {
        "cpu_threads": {"string_value": "1"}, "cpu_threads_batch": {"string_value": "2"},
        "cpu_poll": {"string_value": "0"}}})
    assert (given.threads, given.batch_threads, given.poll) == (1, 2, 0)
