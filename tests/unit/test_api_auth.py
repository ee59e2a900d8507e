"""API keys → tenants and namespaces, the admin key, open mode only on loopback by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.api.auth import Authenticator, bearer_token
from orchestrator.api.settings import ApiSettings
from orchestrator.config import Settings
from orchestrator.errors import PermissionDenied, Unauthenticated


def test_open_mode_defaults_to_loopback_without_keys() -> None:
    assert Authenticator.from_settings(ApiSettings(host="127.0.0.1")).open_mode
    assert Authenticator.from_settings(ApiSettings(host="::1")).open_mode
    assert not Authenticator.from_settings(ApiSettings(host="0.0.0.0")).open_mode
    assert not Authenticator.from_settings(ApiSettings(host="127.0.0.1", keys={"sk-a": "acme"})).open_mode
    assert Authenticator.from_settings(ApiSettings(host="0.0.0.0", open_mode=True)).open_mode


def test_open_mode_accepts_any_key_only_when_none_is_configured() -> None:
    bare = Authenticator.from_settings(ApiSettings())
    assert bare.authenticate(None).tenant == "default" and bare.authenticate("sk-whatever").admin
    keyed = Authenticator.from_settings(ApiSettings(keys={"sk-a": "acme"}, open_mode=True))
    assert keyed.authenticate(None).tenant == "default"
    assert keyed.authenticate("sk-a").tenant == "acme"
    with pytest.raises(Unauthenticated):
        keyed.authenticate("sk-b")


def test_closed_mode_needs_a_known_key() -> None:
    auth = Authenticator.from_settings(ApiSettings(host="0.0.0.0", keys={"sk-a": "acme"}, admin_key="sk-root"))
    with pytest.raises(Unauthenticated, match="missing API key"):
        auth.authenticate(None)
    with pytest.raises(Unauthenticated, match="invalid API key"):
        auth.authenticate("sk-a ")
    acme = auth.authenticate("sk-a")
    assert (acme.tenant, acme.admin) == ("acme", False)
    with pytest.raises(PermissionDenied):
        acme.require_admin()
    auth.authenticate("sk-root").require_admin()


def test_namespaces(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text('admin_key = "sk-root"\n'
                         '[keys."sk-a"]\ntenant = "acme"\nnamespace = "support"\nnamespaces = ["sales"]\n'
                         '[keys."sk-b"]\ntenant = "beta"\n')
    auth = Authenticator.from_settings(ApiSettings(keys_file=keys_file))
    assert not auth.open_mode
    acme = auth.authenticate("sk-a")
    assert acme.resolve_namespace(None) == "support" and acme.resolve_namespace("sales") == "sales"
    with pytest.raises(PermissionDenied, match="'hr'"):
        acme.resolve_namespace("hr")
    beta = auth.authenticate("sk-b")
    assert beta.resolve_namespace(None) is None
    with pytest.raises(PermissionDenied):
        beta.resolve_namespace("support")
    assert auth.authenticate("sk-root").resolve_namespace("anything") == "anything"


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_API__KEYS", '{"sk-a": "acme", "sk-b": {"tenant": "beta", "namespace": "n1"}}')
    monkeypatch.setenv("ORCH_API__ADMIN_KEY", "sk-root")
    auth = Authenticator.from_settings(Settings().api)
    assert auth.authenticate("sk-b").namespace == "n1" and auth.authenticate("sk-root").admin


@pytest.mark.parametrize(("header", "key"), [(None, None), ("Bearer sk-1", "sk-1"), ("bearer  sk-1 ", "sk-1")])
def test_bearer_token(header: str | None, key: str | None) -> None:
    assert bearer_token(header) == key


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   "])
def test_malformed_authorization_is_refused(header: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        bearer_token(header)
