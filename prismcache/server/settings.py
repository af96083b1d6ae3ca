"""The proxy's ``server:`` configuration section, parsed into :class:`ServerSettings`.

The core config (:class:`~prismcache.config.CacheConfig`) keeps ``server:`` as a raw mapping;
this module owns its keys and validates them. Unknown keys are errors::

    server:
      upstream: http://localhost:8000/v1    # the upstream's OpenAI base URL (--upstream wins)
      upstream_api_key_env: UPSTREAM_KEY   # env var holding the proxy's own upstream key
      admin_token_env: PRISM_ADMIN_TOKEN   # env var holding the admin token; unset: no admin API
      tenants:                             # client key -> tenant; empty: pass-through mode
        - {tenant: acme, key_env: ACME_KEY}
        - {tenant: globex, key: sk-globex-123}
      max_body_bytes: 1MiB
      cache_truncated: false               # store finish_reason=length responses too
      timeout: 300s                        # upstream read timeout -> 504
      connect_timeout: 5s                  # upstream connect timeout -> 504
      coalesce: true                       # identical in-flight requests share one upstream call
      lookup_inline: false                 # run cache lookups on the event loop (see docs)
      shutdown_timeout: 30s                # graceful shutdown: wait this long for in-flight work
      embed_batch_max: 16                  # concurrent lookups embedded in one model call (1: off)
      embed_batch_wait_ms: 0.5             # how long a batch waits for company (never when alone)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from prismcache.config import parse_duration
from prismcache.errors import ConfigError

__all__ = ["ServerSettings", "TenantKey"]

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "kib": 2**10, "mib": 2**20, "gib": 2**30}


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantKey:
    """One client API key and the tenant it belongs to. ``repr`` never shows the key."""

    tenant: str
    key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tenant, str) or not self.tenant:
            raise ConfigError("server.tenants: every entry needs a non-empty 'tenant' name")
        if not isinstance(self.key, str) or not self.key:
            raise ConfigError(f"server.tenants: tenant {self.tenant!r} has an empty key")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """How the proxy runs. Build it with :meth:`from_config`; every field has a default.

    Attributes:
        upstream: the upstream's OpenAI base URL (``http://host:8000/v1``), or ``None`` when
            the command line supplies it.
        upstream_api_key: the proxy's own upstream key (read from ``upstream_api_key_env``),
            or ``None``: then pass-through mode forwards the client's key.
        admin_token: the admin bearer token (read from ``admin_token_env``); ``None`` disables
            the admin API.
        tenants: client keys and their tenants; empty means pass-through mode.
        max_body_bytes: larger request bodies get a 400.
        cache_truncated: store responses cut off by ``max_tokens`` (``finish_reason: length``).
        timeout: seconds the upstream may take between bytes before a 504.
        connect_timeout: seconds to connect to the upstream before a 504.
        coalesce: identical in-flight requests share one upstream call.
        lookup_inline: call ``cache.lookup`` on the event loop instead of a worker thread.
        shutdown_timeout: seconds a graceful shutdown waits for in-flight requests.
        embed_batch_max: texts embedded in one model call for concurrent requests (1: off).
        embed_batch_wait_ms: ms a batch waits for more requests (0-10; never when alone).

    >>> ServerSettings.from_config({"max_body_bytes": "64KiB"}).max_body_bytes
    65536
    """

    upstream: str | None = None
    upstream_api_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    tenants: tuple[TenantKey, ...] = ()
    max_body_bytes: int = 1 << 20
    cache_truncated: bool = False
    timeout: float = 300.0
    connect_timeout: float = 5.0
    coalesce: bool = True
    lookup_inline: bool = False
    shutdown_timeout: float = 30.0
    embed_batch_max: int = 16
    embed_batch_wait_ms: float = 0.5

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ConfigError(f"server.max_body_bytes must be positive, got {self.max_body_bytes}")
        for name in ("timeout", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"server.{name} must be positive")
        if self.shutdown_timeout < 0:
            raise ConfigError("server.shutdown_timeout must be >= 0")
        if not 0 <= self.embed_batch_wait_ms <= 10 or self.embed_batch_max < 1:
            raise ConfigError("server.embed_batch_wait_ms must be 0-10, embed_batch_max >= 1")
        keys = [t.key for t in self.tenants]
        if len(set(keys)) != len(keys):
            raise ConfigError("server.tenants: the same key is listed twice")

    @property
    def pass_through(self) -> bool:
        """No tenants configured: the client's bearer key (hashed) is its tenant."""
        return not self.tenants

    @classmethod
    def from_config(
        cls, raw: Mapping[str, Any] | None, *, environ: Mapping[str, str] | None = None
    ) -> ServerSettings:
        """Validate a ``server:`` section (``CacheConfig.server``) and read the secrets it
        names from ``environ`` (default ``os.environ``).

        Raises :class:`ConfigError` naming the key on unknown keys, bad values, or an env var
        that a tenant's ``key_env`` names but that is unset.
        """
        env = os.environ if environ is None else environ
        raw = dict(raw or {})
        allowed = {f.name for f in fields(cls)} - {"upstream_api_key", "admin_token"}
        allowed |= {"upstream_api_key_env", "admin_token_env"}
        unknown = set(raw) - allowed
        if unknown:
            raise ConfigError(f"server: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        values: dict[str, Any] = {}
        if raw.get("upstream") is not None:
            values["upstream"] = _url(raw["upstream"])
        for name, target in (("upstream_api_key_env", "upstream_api_key"),
                             ("admin_token_env", "admin_token")):
            if raw.get(name) is not None:
                values[target] = env.get(_str(raw[name], f"server.{name}")) or None
        values["tenants"] = tuple(_tenants(raw.get("tenants") or [], env))
        if "max_body_bytes" in raw:
            values["max_body_bytes"] = _size(raw["max_body_bytes"])
        for name in ("cache_truncated", "coalesce", "lookup_inline"):
            if name in raw:
                if not isinstance(raw[name], bool):
                    raise ConfigError(f"server.{name} must be true or false, got {raw[name]!r}")
                values[name] = raw[name]
        for name, kind in (("embed_batch_max", int), ("embed_batch_wait_ms", (int, float))):
            if name in raw:
                if not isinstance(raw[name], kind) or isinstance(raw[name], bool):
                    raise ConfigError(f"server.{name} must be a number, got {raw[name]!r}")
                values[name] = raw[name]
        for name in ("timeout", "connect_timeout", "shutdown_timeout"):
            if name in raw:
                duration = parse_duration(raw[name], key=f"server.{name}")
                if duration is None:
                    raise ConfigError(f"server.{name} must be a duration, got {raw[name]!r}")
                values[name] = duration.total_seconds()
        return cls(**values)


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _url(value: Any) -> str:
    url = _str(value, "server.upstream").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"server.upstream must be an http(s) URL, got {value!r}")
    return url


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    number = text.rstrip("kmgib")
    unit = text[len(number):]
    try:
        return int(float(number) * _SIZE_UNITS[unit])
    except (KeyError, ValueError):
        raise ConfigError(f"server.max_body_bytes: {value!r} is not a size like 1MiB") from None


def _tenants(spec: Any, env: Mapping[str, str]) -> list[TenantKey]:
    if not isinstance(spec, list):
        raise ConfigError("server.tenants must be a list of {tenant, key | key_env}")
    out = []
    for i, item in enumerate(spec):
        if not isinstance(item, Mapping):
            raise ConfigError(f"server.tenants[{i}] must be a mapping")
        unknown = set(item) - {"tenant", "key", "key_env"}
        if unknown or ("key" in item) == ("key_env" in item):
            raise ConfigError(
                f"server.tenants[{i}] needs 'tenant' and exactly one of 'key' or 'key_env'")
        if "key_env" in item:
            name = _str(item["key_env"], f"server.tenants[{i}].key_env")
            key = env.get(name)
            if not key:
                raise ConfigError(f"server.tenants[{i}]: environment variable {name} is not set")
        else:
            key = item["key"]
        out.append(TenantKey(tenant=item.get("tenant", ""), key=key))
    return out
