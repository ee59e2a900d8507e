"""Settings come from ORCH_<SECTION>__<FIELD> environment variables, validated."""

from __future__ import annotations

import pydantic
import pytest

from orchestrator.config import Settings


def test_nested_sections_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_REDIS__URL", "redis://cache:6380/1")
    monkeypatch.setenv("ORCH_TRITON__LLM_MODEL", "tensorrt_llm_bls")
    monkeypatch.setenv("ORCH_CACHE__SAMPLED_REQUESTS", "seeded")
    monkeypatch.setenv("ORCH_SEMANTIC__THRESHOLD", "0.9")
    settings = Settings()
    assert settings.redis.url == "redis://cache:6380/1"
    assert settings.triton.llm_model == "tensorrt_llm_bls"
    assert settings.cache.sampled_requests == "seeded"
    assert settings.semantic.threshold == 0.9
    assert settings.cache.ttl_s == 86_400  # untouched defaults stay


@pytest.mark.parametrize(("name", "value"), [("ORCH_CACHE__SAMPLED_REQUESTS", "sometimes"),
                                             ("ORCH_REDIS__KEY_PREFIX", "a:b"),
                                             ("ORCH_SEMANTIC__THRESHOLD", "1.5"),
                                             ("ORCH_CACHE__TTL_S", "0")])
def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError, match=name.split("__")[1].lower()):
        Settings()
