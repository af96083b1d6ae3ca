"""The shared document store: Redis (>= 7.0) — one server, a Sentinel-managed primary or a
Redis Cluster — and several cache processes.

Keys, all under a **namespace** ``P``: on one Redis (and behind Sentinel) the configurable
prefix (default ``prism:``), exactly the layout of earlier versions; on a Redis Cluster the
prefix plus one bucket's hash tag, ``prism:{pc:b07}``, for each of ``buckets`` (16) buckets::

    P e:<id>         hash    the entry, one field per codec field (absent field = None),
                             with native expiry (PEXPIREAT) at ``expires``
    P refs           hash    id -> the entry's ref as JSON (category, partition, exact_key,
                             size, priority, tenant, model, eviction member): what is needed to
                             unindex an entry whose hash Redis already expired
    P ids            zset    every id (score 0): keyset-paginated scans, in id order
    P c:<category>   zset    score = priority, member = 16 hex digits of a sortable
                             last_access + 19-digit id: eviction order is ZRANGE order
    P t:<tenant>     set     ids per tenant        P m:<model>   set   ids per model
    P p:<partition>  set     ids per partition: loading one partition's index
    P exp            zset    id by ``expires``: ``expire(now)`` and the reaper
    P usage          hash    ``n:<category>`` entries, ``b:<category>`` bytes
    P changes        stream  the change feed (:mod:`prismcache.sync`), MAXLEN ~ 100k in all
                             (``stream_maxlen`` is shared equally by the buckets)
    P epoch          string  random token naming this incarnation of the feed
    P layout         string  "2" once every entry is in its partition's set

and, on a cluster only, ``prefix{pc:meta}buckets``: the bucket count, set by the first process.

An entry lives in bucket ``id % buckets``: :meth:`RedisStore.get`, ``touch`` and ``delete``
are given only ids, so the key of an entry must follow from its id alone. Every bucket's keys
share one hash tag, so each Lua script (:mod:`prismcache.stores.redis_lua`) touches one slot;
the tags are chosen so that bucket ``b`` hashes into the ``b``-th of ``buckets`` equal slot
ranges, which spreads the buckets evenly over shards holding contiguous slot ranges (what
``redis-cli --cluster create`` makes). What spans buckets — usage, find, expire, scan, the
eviction order of a category, the change feed (one stream per bucket) — fans out over them.

Ids are written as 19 zero-padded decimal digits, so Lua never does arithmetic on them (its
numbers are doubles) and lexicographic order is numeric order.

Every mutation is one Lua script (registered once, run by EVALSHA), so the hash, every index,
the usage counters and the change-feed event cannot diverge. Redis may delete an entry's hash
by itself when it expires; scripts tolerate that: the **reaper** at the start of ``usage``,
``find``, ``evict_over`` and ``expire`` unindexes ids due in ``P exp`` whose hash is gone
(keeping the counters exact and logging their removal), ``touch`` and ``get`` do the same for
the one id they meet. An entry stored already expired (clock skew, tests) gets no native expiry
and stays until ``expire`` removes it.

A hit is one round trip: ``get`` is one script, which first applies the touches (recorded
hits) waiting for its bucket; a touch waits for the store's next command, at most 10 ms
(:mod:`prismcache.stores.redis_touches`). The change feed's methods are in
:mod:`prismcache.stores.redis_feed`.

Every redis-py exception becomes a :class:`~prismcache.errors.StoreError` in ``translate``
(:mod:`prismcache.stores.redis_connect`, which also parses the URLs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prismcache.entry import Entry, EntryRef, UsageCount
from prismcache.errors import ConfigError, StoreError, StoreUnavailable
from prismcache.labels import MAX_LABELS_PER_TENANT, Label
from prismcache.quotas import Quotas
from prismcache.stores import redis_labels
from prismcache.stores import redis_lua as lua
from prismcache.stores import redis_records as rec
from prismcache.stores.codec import FIELDS, decode, encode
from prismcache.stores.redis_connect import open_clients, redis_module, run_pipeline
from prismcache.stores.redis_connect import translate as _translate
from prismcache.stores.redis_feed import Command as _Command
from prismcache.stores.redis_feed import RedisChangeFeed
from prismcache.stores.redis_touches import ARGS_PER_TOUCH, PendingTouches

__all__ = ["RedisStore"]

_BATCH = lua.BATCH
_MIN_VERSION = (7, 0)
_CLUSTER_BUCKETS = 16
_MAX_BUCKETS = 1024
_DOCUMENTS = ("request", "response", "chunks")
_INDEX_FIELDS = tuple(f for f in FIELDS if f not in _DOCUMENTS)
_TOUCHES = ("deferred", "sync")


class RedisStore(RedisChangeFeed):
    """A :class:`~prismcache.stores.base.DocumentStore` and
    :class:`~prismcache.sync.ChangeFeed` in Redis, shared by any number of processes.

    ``client`` is a ``redis.Redis`` (``decode_responses=False``), for example from a Sentinel's
    ``master_for(...)``, or a ``redis.cluster.RedisCluster``; ``feed_client`` one for the
    blocking reads of the change feed (its socket timeout must exceed the block time; by
    default ``client`` is used and reads block at most half its socket timeout). ``buckets``
    is the number of hash-tagged key groups on a cluster (default 16; every process must use
    the same, which the store checks); one Redis uses one, untagged. ``shown`` is how the
    store names itself in messages. ``touches="deferred"`` (the default) sends a hit's touch
    with the store's next command, at most ``touch_delay`` seconds later, so a hit costs one
    round trip (:mod:`prismcache.stores.redis_touches`); ``"sync"`` sends each as it happens. Connects
    once to check the server (Redis >= 7.0): raises :class:`StoreUnavailable` when it cannot,
    :class:`ConfigError` for inconsistent options.
    """

    def __init__(self, client: Any, *, prefix: str = "prism:", stream_maxlen: int = 100_000,
                 feed_client: Any = None, shown: str = "redis",
                 buckets: int | None = None, touches: str = "deferred",
                 touch_delay: float = 0.01) -> None:
        if not prefix:
            raise ConfigError("a Redis store prefix must not be empty (e.g. 'prism:')")
        if int(stream_maxlen) < 1:
            raise ConfigError(f"stream_maxlen must be >= 1, got {stream_maxlen!r}")
        if touches not in _TOUCHES:
            raise ConfigError(f"touches must be one of {', '.join(_TOUCHES)}, got {touches!r}")
        if not touch_delay > 0:
            raise ConfigError(f"touch_delay must be > 0 seconds, got {touch_delay!r}")
        self._cluster = rec.is_cluster_client(client)
        if self._cluster and "{" in prefix:
            raise ConfigError(f"on a Redis Cluster the prefix {prefix!r} must not hold a hash "
                              "tag ('{'): the store tags its keys per bucket")
        if not self._cluster and buckets not in (None, 1):
            raise ConfigError(f"buckets={buckets} applies to a Redis Cluster only ({shown})")
        count = int(buckets or (_CLUSTER_BUCKETS if self._cluster else 1))
        if not 1 <= count <= _MAX_BUCKETS:
            raise ConfigError(f"buckets must be in [1, {_MAX_BUCKETS}], got {count}")
        self._client = client
        self._feed_client = feed_client
        self._prefix = prefix
        self._spaces = ([prefix + "{" + tag + "}" for tag in rec.bucket_tags(count)]
                        if self._cluster else [prefix])
        self._maxlen = str(-(-int(stream_maxlen) // len(self._spaces)))  # the total, shared
        self._shown = shown
        self._next_epoch_check = 0.0
        self._closed = False
        self._put = client.register_script(lua.PUT)
        self._touch = client.register_script(lua.TOUCH)
        self._get = client.register_script(lua.GET)
        self._pending = (PendingTouches(self._send_touches, delay=touch_delay, shown=shown)
                         if touches == "deferred" else None)
        self._delete = client.register_script(lua.DELETE)
        self._expire = client.register_script(lua.EXPIRE)
        self._evict = client.register_script(lua.EVICT)
        self._evict_for = client.register_script(lua.EVICT_FOR)
        self._find = client.register_script(lua.FIND)
        self._usage = client.register_script(lua.USAGE)
        with self._session():
            info = client.info("server")
            self._check_buckets()
            self._index_partitions()
        if info and all(isinstance(v, dict) for v in info.values()):
            info = next(iter(info.values()))  # a cluster client answers per node
        version = tuple(int(p) for p in str(info.get("redis_version", "0.0")).split(".")[:2])
        if version < _MIN_VERSION:
            raise StoreUnavailable(f"Redis store {shown} runs Redis {info.get('redis_version')};"
                                   " prismcache needs >= 7.0")

    @classmethod
    def from_url(cls, url: str, *, prefix: str | None = None,
                 socket_timeout: float | None = None, connect_timeout: float | None = None,
                 stream_maxlen: int | None = None, buckets: int | None = None,
                 touches: str | None = None, touch_delay: float = 0.01) -> RedisStore:
        """Open ``redis://``, ``rediss://``, ``redis+sentinel://`` or ``redis+cluster://``
        (see :mod:`prismcache.stores.redis_connect` for the URLs and their options; keywords
        win over the query string; ``touch_delay`` is a keyword only). A ``redis://`` URL naming
        a cluster node opens the cluster.
        """
        clients, options = open_clients(url, {
            "prefix": prefix, "socket_timeout": socket_timeout,
            "connect_timeout": connect_timeout, "stream_maxlen": stream_maxlen,
            "buckets": buckets, "touches": touches})
        try:
            return cls(clients.main, prefix=options.prefix, stream_maxlen=options.stream_maxlen,
                       feed_client=clients.feed, shown=clients.shown, buckets=options.buckets,
                       touches=options.touches, touch_delay=touch_delay)
        except BaseException:
            clients.close()
            raise

    @property
    def prefix(self) -> str:
        """The prefix of every key this store uses."""
        return self._prefix

    @property
    def touches_lost(self) -> int:
        """Hits whose touch was dropped because Redis could not be reached (each logged)."""
        return 0 if self._pending is None else self._pending.lost

    @property
    def buckets(self) -> int:
        """How many hash-tagged key groups the entries are spread over (1 on one Redis)."""
        return len(self._spaces)

    def __repr__(self) -> str:
        return f"RedisStore({self._shown!r}, prefix={self._prefix!r})"

    # -- the document store -----------------------------------------------------------------

    def put(self, entry: Entry) -> None:
        """Insert ``entry`` (replacing the same id), index it, log it to the change feed,
        all in one script; Redis expires the hash by itself at ``expires``."""
        record = encode(entry)
        fields: list[Any] = []
        for name, value in zip(FIELDS, record, strict=True):
            if value is not None:
                fields += [name, rec.scalar(value)]
        ref_json = rec.ref_json(record)
        event: list[Any] = ["op", "put", "id", rec.key(record.id), "ref", ref_json,
                            "embedder", record.embedder]
        if record.vector is not None:
            event += ["vector", record.vector]
        args = [
            rec.key(record.id), ref_json, repr(record.priority),
            rec.member(record.last_access, record.id), record.category, record.tenant,
            record.model, str(record.size),
            "" if record.expires is None else repr(record.expires), rec.new_epoch(), len(fields),
            *fields, *event,
        ]
        self._run(self._put, self._space_of(record.id), args)

    def get(self, entry_id: int) -> Entry | None:
        """The entry with ``entry_id``, or ``None`` (also when Redis expired its hash, which
        is then unindexed); expired entries not yet removed are still returned. One script,
        carrying the touches waiting for this bucket: a hit's one round trip."""
        key = rec.valid(entry_id)
        if key is None:
            return None
        space = self._space_of(int(entry_id))
        carried = [] if self._pending is None else self._pending.take(space)
        try:
            if len(carried) > _BATCH * ARGS_PER_TOUCH:  # more than a script takes: rare
                self._send_touches(space, carried[:-_BATCH * ARGS_PER_TOUCH])
                carried = carried[-_BATCH * ARGS_PER_TOUCH:]
            row = self._call(self._get, space, [key, *carried])
        except StoreError as exc:
            if self._pending is not None:
                self._pending.dropped(carried, exc)
            raise
        if not row:
            return None
        return decode(rec.record(dict(zip(row[::2], row[1::2], strict=True))))

    def touch(self, entry_id: int, *, now: float, priority: float) -> None:
        """Record a hit on ``entry_id`` and move it in its category's eviction order; a
        missing id is ignored. Deferred (the default): kept until the store's next command,
        at most 10 ms, and applied before that command (see
        :mod:`prismcache.stores.redis_touches`)."""
        key = rec.valid(entry_id)
        if key is None:
            return
        args = [key, repr(float(now)), repr(float(priority)),
                rec.member(float(now), int(entry_id))]
        space = self._space_of(int(entry_id))
        if self._pending is None:
            self._run(self._touch, space, args)
            return
        if self._closed:
            raise StoreUnavailable(f"Redis store {self._shown} is closed")
        self._pending.add(space, args)

    def delete(self, entry_ids: Iterable[int]) -> list[EntryRef]:
        """Delete ``entry_ids`` (scripts of 512 ids per bucket, each atomic); refs of those
        that existed."""
        groups: dict[str, list[str]] = {}
        for entry_id in entry_ids:
            key = rec.valid(entry_id)
            if key is not None:
                groups.setdefault(self._space_of(int(entry_id)), []).append(key)
        refs: list[EntryRef] = []
        for space, keys in groups.items():
            for start in range(0, len(keys), _BATCH):
                refs += rec.refs(self._run(self._delete, space,
                                        ["all", *keys[start:start + _BATCH]]))
        return refs

    def find(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
    ) -> list[EntryRef]:
        """Refs of the entries matching every given filter, from the tenant/model sets and
        the category's eviction index (one script per bucket: O(matches), all at once)."""
        args: list[str] = []
        for value in (tenant, category, model):
            args += ["0", ""] if value is None else ["1", value]
        return [ref for space in self._spaces
                for ref in rec.refs(self._run(self._find, space, args))]

    def evict_over(
        self, category: str, *, max_entries: int | None, max_bytes: int | None
    ) -> list[EntryRef]:
        """Delete the lowest ``(priority, last_access, id)`` entries of ``category`` until it
        is within both limits, in one script reading the usage counters first (O(1) within the
        limits, O(k log n) to evict k); refs in eviction order. On a cluster the usage of every
        bucket is read in one pipeline, and evicting merges the buckets' orders (see
        :meth:`_evict_across`)."""
        args = [category, "" if max_entries is None else str(int(max_entries)),
                "" if max_bytes is None else str(int(max_bytes))]
        if len(self._spaces) > 1:
            return self._evict_across(category, max_entries, max_bytes)
        return rec.refs(self._run(self._evict, self._spaces[0], args))

    def evict_for(self, category: str, quotas: Quotas) -> list[EntryRef]:
        """Delete entries until every limit of ``quotas`` holds, victims chosen as by
        :meth:`Quotas.next_victim` (restated in the script), atomically in one script that
        reads the usage counters first; refs in eviction order. On a cluster the victims are
        chosen here, one :meth:`evict_over` step at a time (not atomic across buckets)."""
        if len(self._spaces) > 1:
            return self._evict_for_across(category, quotas)
        names = sorted(set(quotas.shares) | set(quotas.ceilings))
        args = [category, str(int(quotas.capacity_entries)),
                "" if quotas.capacity_bytes is None else str(int(quotas.capacity_bytes)),
                str(len(names))]
        for name in names:
            ceiling = quotas.ceilings.get(name)
            args += [name, repr(float(quotas.shares.get(name, 0.0))),
                     "" if ceiling is None else repr(float(ceiling))]
        return rec.refs(self._run(self._evict_for, self._spaces[0], args))

    def _evict_for_across(self, category: str, quotas: Quotas) -> list[EntryRef]:
        usage = {name: (u.entries, u.bytes) for name, u in self.usage().items()}
        evicted: list[EntryRef] = []
        while (victim := quotas.next_victim(usage, category)) is not None:
            entries, size = usage[victim]
            refs = self._evict_across(victim, entries - 1, None)
            if not refs:
                break
            evicted += refs
            usage[victim] = (entries - len(refs), size - sum(r.size for r in refs))
        return evicted

    def expire(self, now: float) -> list[EntryRef]:
        """Delete every entry with ``expires <= now``; return their refs, and those of
        entries whose hash Redis already expired (reconciled at the same time)."""
        refs: list[EntryRef] = []
        for space in self._spaces:
            while True:
                out = self._run(self._expire, space, [repr(float(now)), str(_BATCH)])
                refs += rec.refs(out[1:])
                if int(out[0]) < _BATCH:
                    break
        return refs

    def scan(self, *, since: float | None = None, documents: bool = True) -> Iterator[Entry]:
        """Yield every entry (``created >= since`` when given), bucket by bucket in id order,
        pages of 512 ids read by keyset pagination of the id index; ``documents=False`` does
        not read the JSON fields. Entries present for the whole scan are yielded exactly once."""
        for space in self._spaces:
            after = "-"
            while True:
                with self._session():
                    page = self._client.zrange(space + "ids", after, "+", bylex=True,
                                               offset=0, num=_BATCH)
                if not page:
                    break
                for entry in self._read_entries(space, [k.decode() for k in page], documents):
                    if since is None or entry.created >= since:
                        yield entry
                after = b"(" + page[-1]

    def scan_partition(self, partition: str) -> Iterator[Entry]:
        """Yield the entries of ``partition`` without their JSON documents (as
        ``scan(documents=False)``), from its id set in every bucket: O(entries of the
        partition), one pipeline for the sets and one per 512 entries."""
        members = self._fan([(space, "smembers", (space + "p:" + partition,), {})
                             for space in self._spaces])
        for space, ids in zip(self._spaces, members, strict=True):
            keys = sorted(k.decode() for k in ids)
            for start in range(0, len(keys), _BATCH):
                yield from self._read_entries(space, keys[start:start + _BATCH], False)

    def usage(self) -> dict[str, UsageCount]:
        """Entries and bytes per category, from the script-maintained counters (summed over
        the buckets)."""
        counts: dict[str, list[int]] = {}
        for space in self._spaces:
            flat = self._run(self._usage, space, [])
            for name, value in zip(flat[::2], flat[1::2], strict=True):
                kind, _, category = name.decode().partition(":")
                counts.setdefault(category, [0, 0])[kind == "b"] += int(value)
        return {c: UsageCount(entries=n, bytes=b) for c, (n, b) in counts.items() if n > 0}

    def add_label(self, label: Label, *, limit: int = MAX_LABELS_PER_TENANT) -> None:
        """Keep ``label`` under its tenant (:mod:`prismcache.stores.redis_labels`)."""
        with self._session():
            redis_labels.add(self._client, self._prefix, label, limit)

    def labels(self, *, tenant: str | None = None,
               category: str | None = None) -> list[Label]:
        """``tenant``'s labels (``None``: all tenants) of ``category`` (``None``: all)."""
        with self._session():
            return redis_labels.read(self._client, self._prefix, tenant, category)

    def delete_labels(self, *, tenant: str | None = None) -> int:
        """Delete ``tenant``'s labels (``None``: everyone's); return how many went."""
        with self._session():
            return redis_labels.delete(self._client, self._prefix, tenant)

    def close(self) -> None:
        """Close the connection pools; later calls raise :class:`StoreUnavailable`."""
        if self._closed:
            return
        if self._pending is not None:
            self._pending.close()  # what cannot be sent is counted and logged there
        self._closed = True
        for client in (self._client, self._feed_client):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # noqa: BLE001 - translated below
                    raise _translate(exc, self._shown) from exc

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _fan(self, commands: list[_Command], *, raise_on_error: bool = True) -> list[Any]:
        """Run ``(space, method, args, kwargs)`` commands in pipelines, replies in order.

        One Redis: one pipeline. A cluster: one plain pipeline per node owning the buckets
        named (redis-py's cluster pipeline costs several times the CPU per command, which a
        follower polling 16 streams every 20 ms would pay continually); when a node answers
        ``MOVED``/``ASK`` or cannot be reached (resharding, failover), the commands run again
        through the cluster client, which follows the redirections and refreshes its map.
        """
        with self._session():
            if not self._cluster:
                return run_pipeline(self._client, commands, raise_on_error)
            groups: dict[str, tuple[Any, list[int]]] = {}
            for n, (space, *_) in enumerate(commands):
                node = self._client.get_node_from_key(space + "usage")
                groups.setdefault(node.name, (node, []))[1].append(n)
            replies: list[Any] = [None] * len(commands)
            redis = redis_module()
            redirected = (redis.exceptions.AskError, redis.exceptions.ConnectionError,
                          redis.exceptions.TimeoutError, redis.exceptions.ClusterDownError,
                          redis.exceptions.TryAgainError)
            moved = False
            try:
                for node, members in groups.values():
                    client = self._client.get_redis_connection(node)
                    got = run_pipeline(client, [commands[n] for n in members], False)
                    for n, reply in zip(members, got, strict=True):
                        replies[n] = reply
            except redirected:
                moved = True
            if moved or any(isinstance(r, redirected) for r in replies):
                return run_pipeline(self._client, commands, raise_on_error)
            for reply in replies:
                if raise_on_error and isinstance(reply, Exception):
                    raise reply
            return replies

    def _space_of(self, entry_id: int) -> str:
        """The namespace of the bucket holding ``entry_id``."""
        return self._spaces[entry_id % len(self._spaces)]

    def _run(self, script: Any, space: str, args: list[Any]) -> Any:
        """Run ``script`` on bucket ``space`` after sending the touches waiting."""
        self._flush_touches()
        return self._call(script, space, args)

    def _call(self, script: Any, space: str, args: list[Any]) -> Any:
        with self._session():
            return script(keys=[space + "usage"], args=[space, self._maxlen, *args])

    def _flush_touches(self) -> None:
        """Send the waiting touches first, so every command sees the hits recorded before it
        (as if each had been sent at once); one that cannot raises ``StoreError``."""
        if self._pending is not None:
            self._pending.flush()

    def _send_touches(self, space: str, args: list[str]) -> None:
        step = _BATCH * ARGS_PER_TOUCH
        for start in range(0, len(args), step):
            self._call(self._touch, space, args[start:start + step])

    def _read_entries(self, space: str, keys: list[str], documents: bool) -> list[Entry]:
        """The entries ``keys`` of bucket ``space`` (one pipeline); those gone are skipped."""
        self._flush_touches()
        with self._session():
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                if documents:
                    pipe.hgetall(space + "e:" + key)
                else:
                    pipe.hmget(space + "e:" + key, _INDEX_FIELDS)
            rows = pipe.execute()
        entries = []
        for row in rows:
            if documents:
                if row:
                    entries.append(decode(rec.record(row)))
            elif row[0] is not None:
                entries.append(decode(rec.record(dict(zip(_INDEX_FIELDS, row, strict=True)),
                                              documents=False), documents=False))
        return entries

    def _evict_across(self, category: str, max_entries: int | None,
                      max_bytes: int | None) -> list[EntryRef]:
        """``evict_over`` over several buckets: the usage of all in one pipeline; when over,
        reconcile natively expired entries (``usage``), then repeatedly take the ``depth``
        lowest members of every bucket's eviction order, merge them and delete the first
        ``depth`` of the merged order — exactly the global lowest — until within limits.

        Not atomic across buckets: processes evicting at the same time may evict a few more
        entries than needed (never a wrong answer, only fewer hits).
        """
        def within(n: int, b: int) -> bool:
            return (max_entries is None or n <= max_entries) and (
                max_bytes is None or b <= max_bytes)

        self._flush_touches()  # the eviction orders read below must hold the hits made

        rows = self._fan([(space, "hmget", (space + "usage", ["n:" + category, "b:" + category]),
                           {}) for space in self._spaces])
        n = sum(int(row[0] or 0) for row in rows)
        b = sum(int(row[1] or 0) for row in rows)
        if within(n, b):
            return []
        current = self.usage().get(category, UsageCount(entries=0, bytes=0))
        n, b = current.entries, current.bytes
        evicted: list[EntryRef] = []
        depth = 8
        while not within(n, b):
            lowest = self._fan([(space, "zrange", (space + "c:" + category, 0, depth - 1),
                                 {"withscores": True}) for space in self._spaces])
            merged = sorted((score, member, space) for space, members in
                            zip(self._spaces, lowest, strict=True) for member, score in members)
            if not merged:
                break
            for _, member, space in merged[:depth]:
                if within(n, b):
                    break
                refs = rec.refs(self._run(self._delete, space, ["all", member[16:].decode()]))
                if not refs:  # a member whose entry is gone: drop it from the order
                    with self._session():
                        self._client.zrem(space + "c:" + category, member)
                for ref in refs:
                    n, b = n - 1, b - ref.size
                evicted += refs
            depth = min(depth * 2, _BATCH)
        return evicted

    def _check_buckets(self) -> None:
        """On a cluster, record the bucket count (first opener) or check it is the same."""
        if not self._cluster:
            return
        key = self._prefix + "{pc:meta}buckets"
        count = str(len(self._spaces))
        self._client.set(key, count, nx=True)
        stored = rec.text(self._client.get(key) or count.encode())
        if stored != count:
            raise ConfigError(f"Redis store {self._shown} holds {stored} buckets under prefix "
                              f"{self._prefix!r}, not {count}: every process must use the same")

    def _index_partitions(self) -> None:
        """Add entries written before partition sets existed (layout 1) to their sets, once."""
        for space in self._spaces:
            if self._client.get(space + "layout") is not None:
                continue
            cursor = 0
            while True:
                cursor, refs = self._client.hscan(space + "refs", cursor, count=_BATCH)
                pipe = self._client.pipeline(transaction=False)
                for key, blob in refs.items():
                    pipe.sadd(space + "p:" + json.loads(blob)[1], key)
                pipe.execute()
                if int(cursor) == 0:
                    break
            self._client.set(space + "layout", "2")

    @contextmanager
    def _session(self) -> Iterator[None]:
        """Check the store is open; translate every redis-py error (the one place)."""
        if self._closed:
            raise StoreUnavailable(f"Redis store {self._shown} is closed")
        try:
            yield
        except StoreError:
            raise
        except UnicodeEncodeError as exc:
            raise StoreError(f"Redis store {self._shown}: text not encodable: {exc}") from exc
        except redis_module().RedisError as exc:
            raise _translate(exc, self._shown) from exc
