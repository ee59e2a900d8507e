"""Settings come from ORCH_<SECTION>__<FIELD> environment variables, validated; unknown names are errors;
`python -m orchestrator config` shows them with secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from orchestrator.config import Settings, UnknownSettingError, check_names, mask_url, setting_names


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


def test_an_unknown_orch_variable_stops_the_start_with_its_name_and_the_nearest_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TRITON__URLS", "triton:8001")
    with pytest.raises(UnknownSettingError, match=r"ORCH_TRITON__URLS .*did you mean ORCH_TRITON__URL\?"):
        Settings()
    monkeypatch.delenv("ORCH_TRITON__URLS")
    monkeypatch.setenv("ORCH_NOTHING_LIKE_IT", "1")
    with pytest.raises(UnknownSettingError, match="ORCH_NOTHING_LIKE_IT"):
        Settings()
    monkeypatch.delenv("ORCH_NOTHING_LIKE_IT")
    monkeypatch.setenv("OTHER_APP_SETTING", "1")  # not ours: left alone
    Settings()


def test_an_unknown_env_file_key_stops_the_start(tmp_path: Path) -> None:
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("ORCH_CACHE__TTL_S=60\nORCH_SEMANTIC__TRESHOLD=0.9\n")
    with pytest.raises(UnknownSettingError, match=r"ORCH_SEMANTIC__TRESHOLD in the env file .*ORCH_SEMANTIC__THRESHOLD"):
        Settings(_env_file=env_file)
    env_file.write_text("ORCH_CACHE__TTL_S=60\n")
    assert Settings(_env_file=env_file).cache.ttl_s == 60


def test_sections_and_key_grants_forbid_unknown_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_CACHE", '{"ttl_s": 60, "store_truncate": false}')
    with pytest.raises(pydantic.ValidationError, match="store_truncate"):
        Settings()
    monkeypatch.delenv("ORCH_CACHE")
    monkeypatch.setenv("ORCH_API__KEYS", '{"sk-1": {"tenant": "acme", "namespcae": "x"}}')
    with pytest.raises(pydantic.ValidationError, match="namespcae"):
        Settings()


def test_every_flattened_name_is_a_valid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    names = setting_names()
    assert {"ORCH_TRITON__URL", "ORCH_CACHE__STORE_TRUNCATED", "ORCH_SEMANTIC__GUARD__CHECKS", "ORCH_API"} <= set(names)
    for name in names:  # every name is accepted: none is reported as unknown
        check_names([name, name.lower()], "in the test", only_prefixed=True)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("ORCH_")}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_serve_refuses_an_unknown_variable_in_one_line() -> None:
    result = run_cli("serve", env={"ORCH_TRITON__REPLICA_URL": '["a:8001"]'})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "configuration: unknown setting ORCH_TRITON__REPLICA_URL in the environment; "
        "did you mean ORCH_TRITON__REPLICAS?"]


def test_config_prints_the_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    env_file = tmp_path / "orchestrator.env"
    env_file.write_text("ORCH_CACHE__TTL_S=60\n")
    env = {"ORCH_REDIS__URL": "redis://cache:s3cret-pw@redis.internal:6380/2",
           "ORCH_API__KEYS": json.dumps({"sk-live-abcdef123456": "acme"}), "ORCH_API__ADMIN_KEY": "sk-admin-zyx987"}
    result = run_cli("config", "--env-file", str(env_file), "--grpc-port", "50999", env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("s3cret-pw", "sk-live-abcdef123456", "sk-admin-zyx987"):
        assert secret not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["redis"]["url"] == "redis://cache:***@redis.internal:6380/2"
    assert shown["cache"]["ttl_s"] == 60 and shown["api"]["grpc_port"] == 50999  # env file and option applied
    assert shown["cache"]["store_truncated"] is True
    (grant,) = shown["api"]["keys"].values()
    assert grant["tenant"] == "acme" and shown["api"]["admin_key"] != "sk-admin-zyx987"
    lines = run_cli("config", "--format", "env", env=env).stdout.splitlines()
    assert "ORCH_SEMANTIC__THRESHOLD=0.8" in lines and "# ORCH_API__KEYS_FILE unset" in lines
    assert not any("s3cret-pw" in line or "sk-admin-zyx987" in line for line in lines)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("rediss://:pw@[::1]:6380/0", "rediss://:***@[::1]:6380/0"),
    ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
])
def test_passwords_in_urls_are_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown
