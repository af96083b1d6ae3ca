"""Document stores, opened by URL.

=====================================  =================================================
URL                                    store
=====================================  =================================================
``memory://``                          :class:`~prismcache.stores.memory.MemoryStore`
``sqlite:///relative/path.db``         :class:`~prismcache.stores.sqlite.SQLiteStore`
``sqlite:////absolute/path.db``        (SQLAlchemy's convention: a 4th slash is the root)
``redis://[[user]:password@]host...``  ``prismcache.stores.redis.RedisStore`` (extra
``rediss://...`` (TLS)                 ``prismcache[redis]``); a cluster node opens the
``redis+sentinel://h:p,h:p/service``   cluster. URLs and options:
``redis+cluster://h:p,h:p/``           :mod:`prismcache.stores.redis_connect`
=====================================  =================================================

Backends are imported only when a URL names them, so a missing optional dependency costs
nothing until it is used.

>>> store = open_store("memory://")
>>> store.usage()
{}
>>> redact_url("redis://app:s3cret@cache.internal:6379/0")
'redis://app:***@cache.internal:6379/0'
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from prismcache.errors import ConfigError
from prismcache.stores.base import DocumentStore

__all__ = ["DocumentStore", "open_store", "redact_url"]

# scheme -> "module:Class"; the class has a ``from_url(url, **options)`` constructor.
_BACKENDS: dict[str, str] = {
    "memory": "prismcache.stores.memory:MemoryStore",
    "sqlite": "prismcache.stores.sqlite:SQLiteStore",
    "redis": "prismcache.stores.redis:RedisStore",
    "rediss": "prismcache.stores.redis:RedisStore",
    "redis+sentinel": "prismcache.stores.redis:RedisStore",
    "redis+cluster": "prismcache.stores.redis:RedisStore",
}
# Optional third-party packages a backend needs -> the extra that installs them.
_EXTRAS: dict[str, str] = {"redis": "redis"}
_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "secret", "token", "key"})


def open_store(url: str, **options: Any) -> DocumentStore:
    """Open the document store named by ``url``; ``options`` go to the backend's constructor.

    Raises :class:`~prismcache.errors.ConfigError` for an unknown scheme (the message lists
    the known ones), a malformed URL, an option the backend does not take, or a backend whose
    optional dependency is not installed (the message says which ``pip install`` fixes it).
    Failing to reach or open the store raises :class:`~prismcache.errors.StoreUnavailable`.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    target = _BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(_BACKENDS))
        raise ConfigError(f"unknown store URL {redact_url(url)!r}; known schemes: {known}")
    factory = _load(target, scheme).from_url
    try:
        inspect.signature(factory).bind(url, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for store {redact_url(url)!r}: {exc}") from exc
    store: DocumentStore = factory(url, **options)
    return store


def redact_url(url: str) -> str:
    """``url`` with its password, and any password- or token-like query value (also with a
    prefix: ``sentinel_password``), replaced by
    ``***``: safe to log.

    >>> redact_url("rediss://:hunter2@redis.example.com:6380/1?password=x&db=1")
    'rediss://:***@redis.example.com:6380/1?password=%2A%2A%2A&db=1'
    >>> redact_url("sqlite:////var/lib/prism.db")
    'sqlite:////var/lib/prism.db'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{host}"
        query = parts.query
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret(name) for name, _ in pairs):
            query = urlencode([(n, "***" if _secret(n) else v) for n, v in pairs])
    except ValueError:
        # Too malformed to parse (e.g. a bad port): show only the scheme rather than risk a secret.
        return f"{url.partition('://')[0]}://<unparseable>"
    if netloc == parts.netloc and query == parts.query:
        return url  # untouched: urlunsplit would drop the empty authority of sqlite:////abs
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secret(name: str) -> bool:
    """Whether a query parameter holds a secret (``password``, ``sentinel_password``, ...)."""
    name = name.lower()
    return name in _SECRET_PARAMS or name.rpartition("_")[2] in _SECRET_PARAMS


def _load(target: str, scheme: str) -> Any:
    """Import ``"module:Class"`` for ``scheme``; a missing dependency is a ``ConfigError``."""
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing in _EXTRAS:
            raise ConfigError(
                f"{scheme}:// stores need the {missing!r} package: "
                f"pip install 'prismcache[{_EXTRAS[missing]}]'"
            ) from exc
        raise ConfigError(
            f"{scheme}:// stores are not available in this prismcache: {exc}"
        ) from exc
    try:
        return getattr(module, class_name)
    except AttributeError as exc:
        raise ConfigError(f"{scheme}:// store class {target!r} does not exist") from exc
