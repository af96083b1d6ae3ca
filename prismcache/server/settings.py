"""The proxy's ``server:`` configuration section, parsed into :class:`ServerSettings`.

The core config (:class:`~prismcache.config.CacheConfig`) keeps ``server:`` as a raw mapping;
this module owns its keys and validates them. Unknown keys are errors::

    server:
      upstream: http://localhost:8000/v1    # the upstream's OpenAI base URL (--upstream wins)
      upstream_api_key_env: UPSTREAM_KEY   # env var holding the proxy's own upstream key
      admin_token_env: PRISM_ADMIN_TOKEN   # env var holding the admin token; unset: no admin API
      metrics_token_env: PRISM_METRICS_TOKEN  # env var holding a /metrics token; unset: open
      tenants:                             # client key -> tenant; empty: pass-through mode
        - {tenant: acme, key_env: ACME_KEY}
        - {tenant: globex, key: sk-globex-123}
      max_body_bytes: 1MiB
      cache_truncated: false               # store finish_reason=length responses too
      timeout: 300s                        # upstream read timeout -> 504
      connect_timeout: 5s                  # upstream connect timeout -> 504
      coalesce: true                       # identical in-flight requests share one upstream call
      coalesce_similar: true               # ... and paraphrases above the category threshold
      upstream_gate: true                  # adaptive limit on upstream calls in flight (AIMD on 429/503)
      upstream_queue_wait: 10s             # calls over the limit wait this long, then go anyway
      upstream_shed: true                  # ... unless the upstream refused lately: then answer
                                           # 429 + Retry-After (or near/stale) without a call
      upstream_shed_early: false           # ... and shed at once a call expected to wait longer
      lookup_inline: false                 # run cache lookups on the event loop (see docs)
      shutdown_timeout: 30s                # graceful shutdown: wait this long for in-flight work
      share_upstream_objects: false        # forward /v1/files, batches, ... on a shared key
      stream_usage: true                   # recorded streams ask the upstream for usage
      embed_batch_max: 16                  # concurrent lookups embedded in one model call (1: off)
      embed_batch_wait_ms: 0.5             # how long a batch waits for company (never when alone)
      lookup_budget_ms: 0                  # > 0: skip the semantic lookup when the embedder's
                                           # queue would hold it longer (a miss, reason busy);
                                           # auto: hit rate x upstream latency; 0: never skip
      store_queue: 256                     # stores pending after replies; past it, dropped (counted)
      store_batch_wait_ms: 50              # stores that embed wait this long for company (0: off)
      store_batch_max: 32                  # ... or until this many queries are queued
      load_admission_min_reuse: 0.05       # while overloaded, admit only categories reused more (0: off)
      load_admission_min_stores: 20        # ... once a category has this many stores to judge by
      load_admission_memory: 10s           # an overload status counts this long (also shedding)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from prismcache.config import parse_duration, parse_size
from prismcache.errors import ConfigError

__all__ = ["ServerSettings", "TenantKey"]

# Fields read from the environment variable a ``<name>_env`` key names, never from the file.
_SECRETS = ("upstream_api_key", "admin_token", "metrics_token")


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
        metrics_token: the bearer token ``GET /metrics`` needs (read from
            ``metrics_token_env``; the admin token is accepted too); ``None``: open to all.
        tenants: client keys and their tenants; empty means pass-through mode.
        max_body_bytes: larger request bodies get a 400.
        cache_truncated: store responses cut off by ``max_tokens`` (``finish_reason: length``).
        timeout: seconds the upstream may take between bytes before a 504.
        connect_timeout: seconds to connect to the upstream before a 504.
        coalesce: identical in-flight requests share one upstream call.
        coalesce_similar: with ``coalesce``, so do requests of one partition and category whose
            queries pass the category's threshold and guards (:mod:`prismcache.server.coalesce`).
        upstream_gate: limit the upstream calls in flight adaptively and queue the rest
            (:class:`prismcache.server.overload.UpstreamGate`).
        upstream_queue_wait: seconds a call waits in that queue before it is sent anyway.
        upstream_shed: while the upstream refused a call within ``load_admission_memory``,
            do not send a call whose wait ran out when the calls in flight are at the level
            the upstream last refused at: answer it with a near/stale answer where the
            category allows, else 429 with ``Retry-After`` and ``X-Prism-Shed``
            (:class:`prismcache.server.overload.UpstreamGate`). ``false``: send it anyway and
            let the upstream decide.
        upstream_shed_early: with ``upstream_shed``, also shed at once a call whose expected
            wait (its place in the queue over the recent release rate) exceeds
            ``upstream_queue_wait`` (off by default: measured to turn queued successes into
            errors, ``docs/economics.md``).
        lookup_inline: call ``cache.lookup`` on the event loop instead of a worker thread.
        shutdown_timeout: seconds a graceful shutdown waits for in-flight requests.
        share_upstream_objects: forward the endpoints of account-wide upstream objects
            (files, batches, stored completions, ...) even when every client shares the
            proxy's upstream key (see :mod:`prismcache.server.forward`).
        stream_usage: ask the upstream for ``stream_options.include_usage`` on streams the
            proxy records, so their entries carry ``usage``.
        embed_batch_max: texts embedded in one model call for concurrent requests (1: off).
        embed_batch_wait_ms: ms a batch waits for more requests (0-10; never when alone).
        lookup_budget_ms: when the model work queued ahead of a request's embedding would
            hold it longer than this (``BatchingEmbedder.backlog``), the request skips the
            semantic lookup and goes upstream at once: a miss, reason ``busy`` (its exact tier
            is still checked); its answer's store, which would embed it, is dropped too while
            the backlog is still over budget. ``None`` (``auto``): the upstream time a lookup
            is expected to save, recent hit rate x recent upstream latency
            (:mod:`prismcache.server.budget`). 0 (the default): never skip. A request on an
            idle proxy is never skipped.
        store_queue: stores (and labels) pending after replies; one more is dropped, counted
            and logged at debug, never making a response wait.
        store_batch_wait_ms: ms a store after a reply whose query the lookup did not embed
            (a far miss, a busy one, ``no-cache``) waits for others, so that their queries
            are embedded in one model call (:class:`prismcache.server.background.EmbedAhead`;
            0-1000; 0: off); an identical request arriving meanwhile sends the batch at once.
        store_batch_max: queries that send such a batch before its wait is over.
        load_admission_min_reuse: while the upstream is overloaded, answers of categories with
            fewer hits per stored entry are not admitted (0: off;
            :class:`prismcache.server.overload.LoadAdmission`).
        load_admission_min_stores: stores a category needs before its reuse is judged.
        load_admission_memory: seconds an upstream overload status (429/503/504) counts, for
            admission under load and for ``upstream_shed``.

    >>> ServerSettings.from_config({"max_body_bytes": "64KiB"}).max_body_bytes
    65536
    """

    upstream: str | None = None
    upstream_api_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    tenants: tuple[TenantKey, ...] = ()
    max_body_bytes: int = 1 << 20
    cache_truncated: bool = False
    timeout: float = 300.0
    connect_timeout: float = 5.0
    coalesce: bool = True
    coalesce_similar: bool = True
    upstream_gate: bool = True
    upstream_queue_wait: float = 10.0
    upstream_shed: bool = True
    upstream_shed_early: bool = False
    lookup_inline: bool = False
    shutdown_timeout: float = 30.0
    share_upstream_objects: bool = False
    stream_usage: bool = True
    embed_batch_max: int = 16
    embed_batch_wait_ms: float = 0.5
    lookup_budget_ms: float | None = 0.0
    store_queue: int = 256
    store_batch_wait_ms: float = 50.0
    store_batch_max: int = 32
    load_admission_min_reuse: float = 0.05
    load_admission_min_stores: int = 20
    load_admission_memory: float = 10.0

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
        if (self.lookup_budget_ms or 0) < 0 or self.store_queue < 1:
            raise ConfigError("server.lookup_budget_ms must be >= 0 and store_queue >= 1")
        if not 0 <= self.store_batch_wait_ms <= 1000 or self.store_batch_max < 1:
            raise ConfigError("server.store_batch_wait_ms must be 0-1000, store_batch_max >= 1")
        if self.load_admission_min_reuse < 0 or self.load_admission_min_stores < 1:
            raise ConfigError("server.load_admission_min_reuse must be >= 0 and "
                              "load_admission_min_stores >= 1")
        if self.load_admission_memory <= 0:
            raise ConfigError("server.load_admission_memory must be positive")
        keys = [t.key for t in self.tenants]
        if len(set(keys)) != len(keys):
            raise ConfigError("server.tenants: the same key is listed twice")

    @property
    def pass_through(self) -> bool:
        """No tenants configured: the client's bearer key (hashed) is its tenant."""
        return not self.tenants

    @classmethod
    def config_keys(cls) -> dict[str, None]:
        """The keys of the ``server:`` section: the fields, except that each secret is named
        by the environment variable holding it (``admin_token`` -> ``admin_token_env``)."""
        names = [f.name for f in fields(cls)]
        return {(f"{n}_env" if n in _SECRETS else n): None for n in names}

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
        allowed = set(cls.config_keys())
        unknown = set(raw) - allowed
        if unknown:
            raise ConfigError(f"server: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        values: dict[str, Any] = {}
        if raw.get("upstream") is not None:
            values["upstream"] = _url(raw["upstream"])
        for target in sorted(_SECRETS):
            name = f"{target}_env"
            if raw.get(name) is not None:
                values[target] = env.get(_str(raw[name], f"server.{name}")) or None
        values["tenants"] = tuple(_tenants(raw.get("tenants") or [], env))
        if "max_body_bytes" in raw:
            values["max_body_bytes"] = parse_size(raw["max_body_bytes"],
                                                  key="server.max_body_bytes")
        for name in ("cache_truncated", "coalesce", "coalesce_similar", "upstream_gate",
                     "upstream_shed", "upstream_shed_early", "lookup_inline",
                     "share_upstream_objects", "stream_usage"):
            if name in raw:
                if not isinstance(raw[name], bool):
                    raise ConfigError(f"server.{name} must be true or false, got {raw[name]!r}")
                values[name] = raw[name]
        for name, kind in (("embed_batch_max", int), ("embed_batch_wait_ms", (int, float)),
                           ("store_queue", int), ("store_batch_wait_ms", (int, float)),
                           ("store_batch_max", int),
                           ("load_admission_min_reuse", (int, float)),
                           ("load_admission_min_stores", int)):
            if name in raw:
                if not isinstance(raw[name], kind) or isinstance(raw[name], bool):
                    raise ConfigError(f"server.{name} must be a number, got {raw[name]!r}")
                values[name] = raw[name]
        budget = raw.get("lookup_budget_ms", 0)
        if budget == "auto":
            values["lookup_budget_ms"] = None
        else:
            if not isinstance(budget, (int, float)) or isinstance(budget, bool):
                raise ConfigError(f"server.lookup_budget_ms must be a number or auto, "
                                  f"got {budget!r}")
            values["lookup_budget_ms"] = budget
        for name in ("timeout", "connect_timeout", "shutdown_timeout", "upstream_queue_wait",
                     "load_admission_memory"):
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
