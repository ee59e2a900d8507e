"""The API layer's section of the orchestrator settings (`Settings.api`, env `ORCH_API__<FIELD>`): ports, keys,
open mode."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class KeyGrant(BaseModel):
    """What one API key may do: act as `tenant`, in the cache namespace `namespace` unless the request
    picks another one from `namespaces`."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1)
    namespace: str | None = None
    namespaces: tuple[str, ...] = ()
    #: Requests per second this key may make on average (None: unlimited), and how many it may make at once.
    rate_limit_rps: float | None = Field(default=None, gt=0)
    rate_limit_burst: int = Field(default=10, ge=1)

    @property
    def allowed_namespaces(self) -> frozenset[str]:
        return frozenset(self.namespaces) | ({self.namespace} if self.namespace else set())


class ApiSettings(BaseModel):
    """ORCH_API__KEYS is a JSON object `{"<key>": "<tenant>"}` or `{"<key>": {"tenant": ..., "namespace": ...,
    "namespaces": [...]}}`; ORCH_API__KEYS_FILE names a TOML file with the same `keys` table and an optional
    `admin_key`; ORCH_API__ADMIN_KEY sets the admin key."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    keys: dict[str, KeyGrant] = Field(default_factory=dict)
    keys_file: Path | None = None
    admin_key: SecretStr | None = None
    # None: open (no key needed, admin allowed) only when bound to loopback and no key is configured.
    open_mode: bool | None = None
    open_tenant: str = "default"
    # How often the gRPC health service re-checks Triton and Redis.
    health_interval_s: float = Field(default=5.0, gt=0)
    log_level: str = "info"
    access_log: bool = False

    @field_validator("keys", mode="before")
    @classmethod
    def _tenant_shorthand(cls, value: object) -> object:
        if isinstance(value, dict):
            return {key: {"tenant": grant} if isinstance(grant, str) else grant for key, grant in value.items()}
        return value

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
