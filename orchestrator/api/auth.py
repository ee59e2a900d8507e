"""API keys → tenants and cache namespaces; the admin key; open mode for local use.

Keys come from ORCH_API__KEYS and/or a TOML keys file (orchestrator.api.settings). A presented key is compared
with every configured key in constant time, so response timing does not reveal how much of a key matched.
Open mode (no key needed, admin allowed) is on by default only when the server is bound to loopback and no
key is configured. With keys configured, an unknown key is refused even in open mode, so a typo never
silently lands in another tenant's cache; without any, every key is accepted (clients such as the openai SDK
always send one). A key with `rate_limit_rps` gets a token bucket (`rate_limit_burst` deep); a request beyond it
is refused with Overloaded (429 / RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import hmac
import logging
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.api.settings import ApiSettings, KeyGrant
from orchestrator.errors import Overloaded, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant whose cache is used, its default namespace and what it may pick."""

    tenant: str
    namespace: str | None = None
    allowed_namespaces: frozenset[str] | None = frozenset()  # None: any namespace
    admin: bool = False

    def resolve_namespace(self, requested: str | None) -> str | None:
        """The namespace a request uses: the one it asks for if this key may use it, else the key's own."""
        if not requested or requested == self.namespace:
            return self.namespace
        if self.allowed_namespaces is None or requested in self.allowed_namespaces:
            return requested
        raise PermissionDenied(f"this API key may not use cache namespace {requested!r}")

    def require_admin(self) -> None:
        if not self.admin:
            raise PermissionDenied("this endpoint needs the admin API key")


class TokenBucket:
    """`rate` requests per second on average, at most `burst` at once (per process)."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.updated = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Authenticator:
    def __init__(self, grants: dict[str, KeyGrant], admin_key: str | None, open_mode: bool,
                 open_tenant: str = "default") -> None:
        self._grants = [(key.encode(), grant) for key, grant in grants.items()]
        self._buckets = {grant_id: TokenBucket(grant.rate_limit_rps, grant.rate_limit_burst)
                         for grant_id, (_, grant) in enumerate(self._grants) if grant.rate_limit_rps}
        self._admin_key = admin_key.encode() if admin_key else None
        self.open_mode = open_mode
        self._open_principal = Principal(tenant=open_tenant, allowed_namespaces=None, admin=True)

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Authenticator:
        grants = dict(settings.keys)
        admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
        if settings.keys_file is not None:
            file_grants, file_admin_key = load_keys_file(settings.keys_file)
            grants = {**file_grants, **grants}
            admin_key = admin_key or file_admin_key
        open_mode = settings.open_mode
        if open_mode is None:
            open_mode = settings.loopback and not grants and not admin_key
        if open_mode and not settings.loopback:
            log.warning("open mode on a non-loopback address (%s): anyone who can connect is admin", settings.host)
        return cls(grants, admin_key, open_mode, settings.open_tenant)

    def describe(self) -> str:
        """The auth mode in words, for start-up messages (no key is shown)."""
        count = len(self._grants)
        keys = f"{count} API key{'' if count == 1 else 's'}" + (" and an admin key" if self._admin_key else "")
        tenant = self._open_principal.tenant
        if self.open_mode and not (self._grants or self._admin_key):
            return f"open mode: no API key needed (any key is accepted), requests run as tenant {tenant!r}, admin included"
        if self.open_mode:
            return f"open mode with {keys}: requests without a key run as tenant {tenant!r}; a key sent must be valid"
        return f"{keys}: every request needs 'Authorization: Bearer <key>'"

    def authenticate(self, api_key: str | None) -> Principal:
        if not api_key:
            if self.open_mode:
                return self._open_principal
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        presented = api_key.encode()
        found: Principal | None = None
        bucket: TokenBucket | None = None
        # No early exit: every key is compared, whichever matches.
        for grant_id, (key, grant) in enumerate(self._grants):
            if hmac.compare_digest(presented, key):
                found = Principal(grant.tenant, grant.namespace, grant.allowed_namespaces)
                bucket = self._buckets.get(grant_id)
        if self._admin_key is not None and hmac.compare_digest(presented, self._admin_key):
            found = Principal(tenant="admin", allowed_namespaces=None, admin=True)
        if found is None:
            if self.open_mode and not self._grants and self._admin_key is None:
                return self._open_principal  # clients such as the openai SDK always send some key
            raise Unauthenticated("invalid API key")
        if bucket is not None and not bucket.take():
            raise Overloaded(f"rate limit of this API key exceeded ({bucket.rate:g} requests/s)")
        return found


def load_keys_file(path: Path) -> tuple[dict[str, KeyGrant], str | None]:
    """A TOML file: `admin_key = "..."` and a `[keys."<key>"]` table per key (tenant, namespace, namespaces)."""
    data = tomllib.loads(path.read_text())
    grants = {key: KeyGrant.model_validate({"tenant": grant} if isinstance(grant, str) else grant)
              for key, grant in data.get("keys", {}).items()}
    return grants, data.get("admin_key")


def bearer_token(authorization: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header (also accepted as gRPC metadata)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()
