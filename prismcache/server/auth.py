"""Who is calling: client API keys -> tenants, the upstream credential, the admin token.

Two modes (see ``docs/proxy.md``):

* **configured** (``server.tenants`` is set): a client must present one of the listed keys as
  ``Authorization: Bearer <key>``; anything else is a 401. The client's key is never sent
  upstream; the proxy's own key (``server.upstream_api_key_env``) is, if it has one.
* **pass-through** (no tenants): the tenant is ``key-`` + the first 16 hex digits of the
  SHA-256 of the client's bearer key (``anonymous`` without a key), and the client's key is
  forwarded upstream unless the proxy holds its own upstream key.

Keys are looked up by SHA-256 digest (the admin token compared with
:func:`hmac.compare_digest`), and no key, token or
upstream credential is ever logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from starlette.datastructures import Headers

from prismcache.server.settings import ServerSettings

__all__ = ["Auth", "Caller", "bearer_token", "hash_key"]

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated client: its tenant, and the ``Authorization`` value to send upstream
    (``None``: send none). ``own_credential``: that value is the client's own key (pass-through
    mode), not one the proxy shares between clients. ``repr`` hides the credential."""

    tenant: str
    upstream_authorization: str | None = field(default=None, repr=False)
    own_credential: bool = False


def bearer_token(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def hash_key(key: str) -> str:
    """The pass-through tenant of a client key: ``key-`` + 16 hex digits of its SHA-256."""
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Auth:
    """Resolves callers and checks the admin token, per :class:`ServerSettings`."""

    def __init__(self, settings: ServerSettings) -> None:
        """Index the configured keys by digest (constant-time comparison on lookup)."""
        self._settings = settings
        self._tenants = {_digest(t.key): t.tenant for t in settings.tenants}
        self._admin = _digest(settings.admin_token) if settings.admin_token else None
        self._metrics = _digest(settings.metrics_token) if settings.metrics_token else None
        upstream = settings.upstream_api_key
        self._upstream = f"Bearer {upstream}" if upstream else None

    @property
    def tenant_names(self) -> tuple[str, ...]:
        """The configured tenant names (empty in pass-through mode)."""
        return tuple(sorted(set(self._tenants.values())))

    def caller(self, headers: Headers) -> Caller | None:
        """The caller presenting ``headers``, or ``None`` when it must get a 401 (configured
        mode and an unknown or missing key)."""
        token = bearer_token(headers)
        if self._settings.pass_through:
            if token is None:
                return Caller(ANONYMOUS, self._upstream)
            if self._upstream:
                return Caller(hash_key(token), self._upstream)
            return Caller(hash_key(token), f"Bearer {token}", own_credential=True)
        if token is None:
            return None
        # A dict lookup by SHA-256 digest: timing can reveal at most digest prefixes, which
        # say nothing about the keys.
        tenant = self._tenants.get(_digest(token))
        return None if tenant is None else Caller(tenant, self._upstream)

    @property
    def admin_enabled(self) -> bool:
        """Whether an admin token is configured (else the admin API answers 404)."""
        return self._admin is not None

    def is_admin(self, headers: Headers) -> bool:
        """Whether ``headers`` carry the admin token."""
        return _matches(self._admin, headers)

    def may_read_metrics(self, headers: Headers) -> bool:
        """Whether ``headers`` may read ``/metrics``: anyone when no metrics token is
        configured, else the bearer of the metrics token or of the admin token."""
        return self._metrics is None or _matches(self._metrics, headers) or self.is_admin(headers)


def _matches(secret: bytes | None, headers: Headers) -> bool:
    token = bearer_token(headers)
    if secret is None or token is None:
        return False
    return hmac.compare_digest(secret, _digest(token))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
