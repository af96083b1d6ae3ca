"""Opening Redis for :class:`~prismcache.stores.redis.RedisStore`: URLs, clients, errors.

=====================================================  =========================================
URL                                                    opens
=====================================================  =========================================
``redis://[[user]:password@]host[:port][/db]``         one Redis (a cluster node: the cluster)
``rediss://...``                                       the same over TLS
``redis+sentinel://[[user]:password@]h:p,h:p/name``    the primary Sentinel names ``name``
``redis+cluster://[[user]:password@]h:p,h:p/``         a Redis Cluster from its seed nodes
=====================================================  =========================================

Options in the query string (or keyword arguments, which win): ``prefix`` (``prism:``),
``socket_timeout`` and ``connect_timeout`` in seconds (0.5 each), ``stream_maxlen``
(100000), ``buckets`` (cluster only, 16), ``touches`` (``deferred``, or ``sync``: see
:class:`~prismcache.stores.redis.RedisStore`). Sentinel URLs also take ``db`` (0) and
``sentinel_password`` (the Sentinels' own password, when they have one). The other query
options of a ``redis://`` URL go to redis-py's ``from_url``; the other URLs refuse unknown ones.

Every redis-py exception becomes a :class:`~prismcache.errors.StoreError` in :func:`translate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from prismcache.errors import ConfigError, StoreError, StoreTimeout, StoreUnavailable
from prismcache.stores import redact_url

__all__ = ["Clients", "Options", "open_clients", "redis_module", "run_pipeline", "translate"]

# Options that are ours, taken from the URL's query string (the rest go to redis-py).
_OPTIONS = ("prefix", "socket_timeout", "connect_timeout", "stream_maxlen", "buckets",
            "touches")
_SENTINEL_OPTIONS = ("db", "sentinel_password")
_FEED_EXTRA = 2.0  # seconds the feed client's socket timeout exceeds a blocking read's


def redis_module() -> Any:
    """The ``redis`` package, or a :class:`ConfigError` saying which extra installs it."""
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(
            "redis:// stores need the 'redis' package: pip install 'prismcache[redis]'"
        ) from exc
    return redis


def translate(exc: Exception, shown: str) -> StoreError:
    """The prismcache error for a redis-py failure on the store at ``shown`` (redacted URL).

    Timeouts -> :class:`StoreTimeout`; refused or dropped connections, authentication, a
    server still loading its data, a read-only replica, a missing master (Sentinel), a cluster
    that is down or reconfiguring -> :class:`StoreUnavailable`; anything else (script errors,
    out of memory, ...) -> ``StoreError``.
    """
    errors = redis_module().exceptions
    message = f"Redis store {shown}: {type(exc).__name__}: {exc}"
    if isinstance(exc, errors.TimeoutError):
        return StoreTimeout(message)
    unavailable = (errors.ConnectionError, errors.ReadOnlyError, errors.ClusterDownError,
                   errors.TryAgainError, errors.MasterDownError, errors.SlotNotCoveredError)
    if isinstance(exc, unavailable):
        return StoreUnavailable(message)  # BusyLoading, Authentication, MasterNotFound too
    text = str(exc)
    if text.startswith(("LOADING", "MASTERDOWN", "READONLY", "NOAUTH", "CLUSTERDOWN",
                        "TRYAGAIN")):
        return StoreUnavailable(message)
    return StoreError(message)


def run_pipeline(client: Any, commands: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]],
                 raise_on_error: bool) -> list[Any]:
    """Run ``(key group, method, args, kwargs)`` commands in one non-transactional pipeline
    of ``client``; the replies in order (exceptions in place when not ``raise_on_error``)."""
    pipe = client.pipeline(transaction=False)
    for _, method, args, kwargs in commands:
        getattr(pipe, method)(*args, **kwargs)
    return list(pipe.execute(raise_on_error=raise_on_error))


@dataclass(frozen=True, slots=True)
class Options:
    """The store's own options, validated."""

    prefix: str = "prism:"
    socket_timeout: float = 0.5
    connect_timeout: float = 0.5
    stream_maxlen: int = 100_000
    buckets: int | None = None  # None: the default of the store's mode
    touches: str = "deferred"  # or "sync": when a hit's touch is sent (RedisStore checks it)


@dataclass(frozen=True, slots=True)
class Clients:
    """What :func:`open_clients` returns: the operations' client, the change feed's (a longer
    socket timeout for blocking reads), whether they talk to a Redis Cluster, and the URL as
    shown in messages."""

    main: Any
    feed: Any
    cluster: bool
    shown: str

    def close(self) -> None:
        """Close both clients' connection pools (errors are the caller's to translate)."""
        for client in (self.main, self.feed):
            client.close()


def open_clients(url: str, given: dict[str, Any]) -> tuple[Clients, Options]:
    """Parse ``url`` (schemes above) with the keyword options ``given`` (``None`` values are
    ignored) and build its redis-py clients. A ``redis://`` URL naming a cluster node opens the
    cluster. Raises :class:`ConfigError` for a bad URL or option, :class:`StoreUnavailable`
    when the cluster-mode check cannot reach the server."""
    shown = redact_url(url)
    scheme = url.partition("://")[0].lower()
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _OPTIONS or (scheme == "redis+sentinel" and name in _SENTINEL_OPTIONS):
            ours[name] = value
        else:
            rest.append((name, value))
    if any(name.lower() == "cluster" for name, _ in rest):
        raise ConfigError(f"open a Redis Cluster with redis+cluster://host:port,... ({shown})")
    options = _options(ours, {k: v for k, v in given.items() if v is not None}, shown)
    redis = redis_module()
    retry = redis.retry.Retry(redis.backoff.NoBackoff(), 1)  # one reconnect, no sleeping
    timeouts = {"socket_connect_timeout": options.connect_timeout, "retry": retry}
    try:
        if scheme in ("redis", "rediss"):
            plain = urlunsplit(parts._replace(query=urlencode(rest)))
            main = redis.Redis.from_url(plain, socket_timeout=options.socket_timeout,
                                        health_check_interval=0, **timeouts)
            if not _is_cluster(main, shown):
                feed = redis.Redis.from_url(plain, health_check_interval=0, **timeouts,
                                            socket_timeout=options.socket_timeout + _FEED_EXTRA)
                return Clients(main, feed, False, shown), options
            main.close()
            return _cluster(redis, [(parts.hostname or "127.0.0.1", parts.port or 6379)],
                            parts, rest, options, timeouts, shown), options
        if rest:
            raise ConfigError(f"unknown option(s) {', '.join(n for n, _ in rest)} in {shown}")
        hosts = parts.netloc.rpartition("@")[2]
        default_port = 6379 if scheme == "redis+cluster" else 26379
        nodes = [_host_port(item, default_port, shown) for item in hosts.split(",") if item]
        if not nodes:
            raise ConfigError(f"no host in Redis store URL {shown}")
        if scheme == "redis+cluster":
            return _cluster(redis, nodes, parts, [], options, timeouts, shown), options
        return _sentinel(redis, nodes, parts, ours, options, timeouts, shown), options
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad Redis store URL {shown}: {exc}") from exc


def _options(ours: dict[str, str], given: dict[str, Any], shown: str) -> Options:
    values = {**ours, **given}
    try:
        options = Options(
            prefix=str(values.get("prefix", "prism:")),
            socket_timeout=float(values.get("socket_timeout", 0.5)),
            connect_timeout=float(values.get("connect_timeout", 0.5)),
            stream_maxlen=int(values.get("stream_maxlen", 100_000)),
            buckets=None if values.get("buckets") is None else int(values["buckets"]),
            touches=str(values.get("touches", "deferred")),
        )
    except ValueError as exc:
        raise ConfigError(f"bad option in Redis store URL {shown}: {exc}") from exc
    if not options.prefix:
        raise ConfigError(f"a Redis store prefix must not be empty, e.g. 'prism:' ({shown})")
    if not (options.socket_timeout > 0 and options.connect_timeout > 0):
        raise ConfigError(f"Redis store timeouts must be > 0 seconds ({shown})")
    return options


def _is_cluster(client: Any, shown: str) -> bool:
    """Whether ``client``'s server runs in cluster mode (one ``INFO cluster``)."""
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis_module().RedisError as exc:
        client.close()
        raise translate(exc, shown) from exc


def _cluster(redis: Any, nodes: list[tuple[str, int]], parts: Any, rest: list[tuple[str, str]],
             options: Options, timeouts: dict[str, Any], shown: str) -> Clients:
    from redis.cluster import ClusterNode, RedisCluster

    auth = {"username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}
    extra: dict[str, Any] = {}
    if parts.scheme.lower() == "rediss":
        extra["ssl"] = True

    def client(socket_timeout: float) -> Any:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes],
                            socket_timeout=socket_timeout, **timeouts, **auth, **extra)

    try:
        main = client(options.socket_timeout)
    except redis.RedisError as exc:
        raise translate(exc, shown) from exc
    return Clients(main, client(options.socket_timeout + _FEED_EXTRA), True, shown)


def _sentinel(redis: Any, nodes: list[tuple[str, int]], parts: Any, ours: dict[str, str],
              options: Options, timeouts: dict[str, Any], shown: str) -> Clients:
    service = parts.path.strip("/")
    if not service or "/" in service:
        raise ConfigError(f"name the Sentinel service: redis+sentinel://host:port/NAME ({shown})")
    password = ours.get("sentinel_password")
    sentinel = redis.sentinel.Sentinel(
        nodes, socket_timeout=options.socket_timeout,
        socket_connect_timeout=options.connect_timeout,
        sentinel_kwargs={"socket_timeout": options.socket_timeout,
                         "socket_connect_timeout": options.connect_timeout,
                         **({"password": password} if password else {})})
    auth = {"db": int(ours.get("db", 0)),
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}

    def client(socket_timeout: float) -> Any:
        return sentinel.master_for(service, socket_timeout=socket_timeout, **timeouts, **auth)

    return Clients(client(options.socket_timeout),
                   client(options.socket_timeout + _FEED_EXTRA), False, shown)


def _host_port(item: str, default_port: int, shown: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":") if not item.endswith("]") else (item, "", "")
    if not host:
        host, port = port, ""
    try:
        return host.strip("[]"), int(port) if port else default_port
    except ValueError as exc:
        raise ConfigError(f"bad host:port {item!r} in Redis store URL {shown}") from exc
