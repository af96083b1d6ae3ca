"""The shared document store: one Redis (>= 7.0), several cache processes.

Keys, all under a configurable prefix ``P`` (default ``prism:``)::

    P e:<id>         hash    the entry, one field per codec field (absent field = None),
                             with native expiry (PEXPIREAT) at ``expires``
    P refs           hash    id -> the entry's ref as JSON (category, partition, exact_key,
                             size, priority, tenant, model, eviction member): what is needed to
                             unindex an entry whose hash Redis already expired
    P ids            zset    every id (score 0): keyset-paginated scans, in id order
    P c:<category>   zset    score = priority, member = 16 hex digits of a sortable
                             last_access + 19-digit id: eviction order is ZRANGE order
    P t:<tenant>     set     ids per tenant        P m:<model>   set   ids per model
    P exp            zset    id by ``expires``: ``expire(now)`` and the reaper
    P usage          hash    ``n:<category>`` entries, ``b:<category>`` bytes
    P changes        stream  the change feed (:mod:`prismcache.sync`), MAXLEN ~ 100k
    P epoch          string  random token naming this incarnation of the feed

Ids are written as 19 zero-padded decimal digits, so Lua never does arithmetic on them (its
numbers are doubles) and lexicographic order is numeric order.

Every mutation is one Lua script (registered once, run by EVALSHA), so the hash, every index,
the usage counters and the change-feed event cannot diverge. Redis may delete an entry's hash
by itself when it expires; scripts tolerate that: the **reaper** at the start of ``usage``,
``find``, ``evict_over`` and ``expire`` unindexes ids due in ``P exp`` whose hash is gone
(keeping the counters exact and logging their removal), ``touch`` and ``get`` do the same for
the one id they meet. An entry stored already expired (clock skew, tests) gets no native expiry
and stays until ``expire`` removes it.

Every redis-py exception becomes a :class:`~prismcache.errors.StoreError` in :func:`_translate`.
Scripts address keys built from the prefix instead of declaring them in ``KEYS``: fine on one
Redis (and behind Sentinel), not on Redis Cluster, which is refused (see ``docs/deployment.md``).
"""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from prismcache.entry import Entry, EntryRef, UsageCount
from prismcache.errors import ConfigError, StoreError, StoreTimeout, StoreUnavailable
from prismcache.quotas import Quotas
from prismcache.stores import redact_url
from prismcache.stores.codec import FIELDS, Record, decode, encode
from prismcache.stores.codec import decode_vector as _decode_vector
from prismcache.sync import Change, ChangeBatch

__all__ = ["RedisStore"]

_MAX_ID = 2**63
_BATCH = 512  # ids per scan page, per delete script call, per expire script call
_REAP = 256  # natively expired ids reconciled per script call
_MIN_VERSION = (7, 0)
_NO_STREAM = "0-0"
_DOCUMENTS = ("request", "response", "chunks")
_INDEX_FIELDS = tuple(f for f in FIELDS if f not in _DOCUMENTS)
_INTS = frozenset({"id", "hits", "size"})
_FLOATS = frozenset({"created", "expires", "last_access", "cost", "latency", "priority"})
_BYTES = frozenset({"request", "response", "chunks", "vector"})
# Options that are ours, taken from the URL's query string (the rest go to redis-py).
_OPTIONS = ("prefix", "socket_timeout", "connect_timeout", "stream_maxlen")

# Shared by every script: ARGV[1] is the prefix, ARGV[2] the stream's MAXLEN.
_PRELUDE = r"""
local P = ARGV[1]
local MAXLEN = ARGV[2]
local function unindex(id, blob)
  local r = cjson.decode(blob)
  redis.call('DEL', P .. 'e:' .. id)
  redis.call('HDEL', P .. 'refs', id)
  redis.call('ZREM', P .. 'ids', id)
  redis.call('ZREM', P .. 'exp', id)
  redis.call('ZREM', P .. 'c:' .. r[1], r[8])
  redis.call('SREM', P .. 't:' .. r[6], id)
  redis.call('SREM', P .. 'm:' .. r[7], id)
  local n = redis.call('HINCRBY', P .. 'usage', 'n:' .. r[1], -1)
  redis.call('HINCRBY', P .. 'usage', 'b:' .. r[1], -tonumber(r[4]))
  if n <= 0 then redis.call('HDEL', P .. 'usage', 'n:' .. r[1], 'b:' .. r[1]) end
  redis.call('XADD', P .. 'changes', 'MAXLEN', '~', MAXLEN, '*',
             'op', 'delete', 'id', id, 'ref', blob)
end
-- Unindex the lowest entry of category cat's eviction order: its id, ref and size, or nil
-- when the order is empty (a member whose ref is gone is dropped and the next one tried).
local function evict_lowest(cat)
  local zkey = P .. 'c:' .. cat
  while true do
    local first = redis.call('ZRANGE', zkey, 0, 0)
    if #first == 0 then return nil end
    local id = string.sub(first[1], 17)
    local blob = redis.call('HGET', P .. 'refs', id)
    if blob then
      unindex(id, blob)
      return id, blob, tonumber(cjson.decode(blob)[4])
    end
    redis.call('ZREM', zkey, first[1])
  end
end
local function reap(limit, out)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local due = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    if redis.call('EXISTS', P .. 'e:' .. id) == 0 then
      local blob = redis.call('HGET', P .. 'refs', id)
      if blob then
        unindex(id, blob)
        if out then out[#out + 1] = id; out[#out + 1] = blob end
      else
        redis.call('ZREM', P .. 'exp', id)
      end
    end
  end
end
"""

# ARGV: 3 id, 4 ref json, 5 priority, 6 member, 7 category, 8 tenant, 9 model, 10 size,
# 11 expires or '', 12 epoch token, 13 n hash args, then the hash args, then the event's.
_PUT = _PRELUDE + r"""
local id = ARGV[3]
local old = redis.call('HGET', P .. 'refs', id)
if old then unindex(id, old) end
local key = P .. 'e:' .. id
local nh = tonumber(ARGV[13])
redis.call('HSET', key, unpack(ARGV, 14, 13 + nh))
redis.call('HSET', P .. 'refs', id, ARGV[4])
redis.call('ZADD', P .. 'ids', 0, id)
redis.call('ZADD', P .. 'c:' .. ARGV[7], ARGV[5], ARGV[6])
redis.call('SADD', P .. 't:' .. ARGV[8], id)
redis.call('SADD', P .. 'm:' .. ARGV[9], id)
redis.call('HINCRBY', P .. 'usage', 'n:' .. ARGV[7], 1)
redis.call('HINCRBY', P .. 'usage', 'b:' .. ARGV[7], ARGV[10])
if ARGV[11] ~= '' then
  redis.call('ZADD', P .. 'exp', ARGV[11], id)
  local t = redis.call('TIME')
  local at = math.floor(tonumber(ARGV[11]) * 1000)
  if at > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
    redis.call('PEXPIREAT', key, at)
  end
end
redis.call('SET', P .. 'epoch', ARGV[12], 'NX')
redis.call('XADD', P .. 'changes', 'MAXLEN', '~', MAXLEN, '*', unpack(ARGV, 14 + nh, #ARGV))
"""

# ARGV: 3 id, 4 now, 5 priority, 6 new eviction member.
_TOUCH = _PRELUDE + r"""
local id = ARGV[3]
local blob = redis.call('HGET', P .. 'refs', id)
if not blob then return 0 end
local key = P .. 'e:' .. id
if redis.call('EXISTS', key) == 0 then unindex(id, blob) return 0 end
redis.call('HINCRBY', key, 'hits', 1)
redis.call('HSET', key, 'last_access', ARGV[4], 'priority', ARGV[5])
local r = cjson.decode(blob)
redis.call('ZREM', P .. 'c:' .. r[1], r[8])
redis.call('ZADD', P .. 'c:' .. r[1], ARGV[5], ARGV[6])
r[5] = ARGV[5]
r[8] = ARGV[6]
redis.call('HSET', P .. 'refs', id, cjson.encode(r))
return 1
"""

# ARGV: 3 'all' (delete) or 'gone' (only ids whose hash Redis expired), 4.. ids.
_DELETE = _PRELUDE + r"""
local out = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local blob = redis.call('HGET', P .. 'refs', id)
  if blob and (ARGV[3] == 'all' or redis.call('EXISTS', P .. 'e:' .. id) == 0) then
    unindex(id, blob)
    out[#out + 1] = id; out[#out + 1] = blob
  end
end
return out
"""

# ARGV: 3 now, 4 limit. Returns {number due, id, ref, id, ref, ...}.
_EXPIRE = _PRELUDE + r"""
local out = {0}
reap(tonumber(ARGV[4]), out)
local due = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
out[1] = #due
for _, id in ipairs(due) do
  local blob = redis.call('HGET', P .. 'refs', id)
  if blob then
    unindex(id, blob)
    out[#out + 1] = id; out[#out + 1] = blob
  else
    redis.call('ZREM', P .. 'exp', id)
  end
end
return out
"""

# ARGV: 3 category, 4 max entries or '', 5 max bytes or ''.
_EVICT = _PRELUDE + r"""
reap(""" + str(_REAP) + r""")
local cat = ARGV[3]
local n = tonumber(redis.call('HGET', P .. 'usage', 'n:' .. cat) or '0')
local b = tonumber(redis.call('HGET', P .. 'usage', 'b:' .. cat) or '0')
local maxn = tonumber(ARGV[4])
local maxb = tonumber(ARGV[5])
local out = {}
while (maxn and n > maxn) or (maxb and b > maxb) do
  local id, blob, size = evict_lowest(cat)
  if not id then break end
  n, b = n - 1, b - size
  out[#out + 1] = id; out[#out + 1] = blob
end
return out
"""

# ARGV: 3 admitting category, 4 capacity entries, 5 capacity bytes or '', 6 number of
# categories k, then k triples: name, share, ceiling or ''. Restates Quotas.next_victim
# (prismcache/quotas.py), the one statement of the rule: keep the two in step.
_EVICT_FOR = _PRELUDE + r"""
reap(""" + str(_REAP) + r""")
local admitting = ARGV[3]
local capn = tonumber(ARGV[4])
local capb = tonumber(ARGV[5])
local shares, ceilings = {}, {}
for i = 0, tonumber(ARGV[6]) - 1 do
  local name = ARGV[7 + 3 * i]
  shares[name] = tonumber(ARGV[8 + 3 * i])
  ceilings[name] = tonumber(ARGV[9 + 3 * i])
end
local n, b = {}, {}
local flat = redis.call('HGETALL', P .. 'usage')
for i = 1, #flat, 2 do
  local kind, cat = string.sub(flat[i], 1, 1), string.sub(flat[i], 3)
  if kind == 'n' then n[cat] = tonumber(flat[i + 1]) else b[cat] = tonumber(flat[i + 1]) end
end
-- Python orders str by code point = UTF-8 byte order; Lua's '<' follows the locale.
local function before(x, y)
  for i = 1, math.min(#x, #y) do
    local cx, cy = string.byte(x, i), string.byte(y, i)
    if cx ~= cy then return cx < cy end
  end
  return #x < #y
end
local function victim()
  local over, tn, tb = nil, 0, 0
  for cat, count in pairs(n) do
    if count > 0 then
      local size = b[cat] or 0
      tn, tb = tn + count, tb + size
      local c = ceilings[cat]
      if c and (count > math.floor(c * capn) or (capb and size > math.floor(c * capb)))
         and (over == nil or before(cat, over)) then over = cat end
    end
  end
  if over then return over end
  local fulln, fullb = tn > capn, capb ~= nil and tb > capb
  if not (fulln or fullb) then return nil end
  local best, most = nil, 0.0
  for cat, count in pairs(n) do
    if count > 0 then
      local share = shares[cat] or 0.0
      local above = -1.0
      if fulln then above = count / capn - share end
      if fullb then above = math.max(above, (b[cat] or 0) / capb - share) end
      if above > most or (best ~= nil and above == most and before(cat, best)) then
        best, most = cat, above
      end
    end
  end
  if best == nil and (n[admitting] or 0) > 0 then return admitting end
  return best
end
local out = {}
while true do
  local cat = victim()
  if cat == nil then break end
  local id, blob, size = evict_lowest(cat)
  if not id then break end
  n[cat], b[cat] = n[cat] - 1, (b[cat] or 0) - size
  out[#out + 1] = id; out[#out + 1] = blob
end
return out
"""

# ARGV: 3..8 flag and value of tenant, category, model. Returns {id, ref, ...}.
_FIND = _PRELUDE + r"""
reap(""" + str(_REAP) + r""")
local tf, tenant, cf, cat, mf, model = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local ids
if tf == '1' and mf == '1' then
  ids = redis.call('SINTER', P .. 't:' .. tenant, P .. 'm:' .. model)
elseif tf == '1' then
  ids = redis.call('SMEMBERS', P .. 't:' .. tenant)
elseif mf == '1' then
  ids = redis.call('SMEMBERS', P .. 'm:' .. model)
elseif cf == '1' then
  ids = redis.call('ZRANGE', P .. 'c:' .. cat, 0, -1)
  for i, member in ipairs(ids) do ids[i] = string.sub(member, 17) end
else
  ids = redis.call('ZRANGE', P .. 'ids', 0, -1)
end
local out = {}
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', P .. 'refs', id)
  if blob and (cf ~= '1' or cjson.decode(blob)[1] == cat) then
    out[#out + 1] = id; out[#out + 1] = blob
  end
end
return out
"""

_USAGE = _PRELUDE + r"""
reap(""" + str(_REAP) + r""")
return redis.call('HGETALL', P .. 'usage')
"""


def _redis() -> Any:
    """The ``redis`` package, or a :class:`ConfigError` saying which extra installs it."""
    try:
        import redis
    except ImportError as exc:
        raise ConfigError(
            "redis:// stores need the 'redis' package: pip install 'prismcache[redis]'"
        ) from exc
    return redis


def _translate(exc: Exception, shown: str) -> StoreError:
    """The prismcache error for a redis-py failure on the store at ``shown`` (redacted URL).

    Timeouts -> :class:`StoreTimeout`; refused or dropped connections, authentication, a
    server still loading its data, a read-only replica, a missing master (Sentinel) ->
    :class:`StoreUnavailable`; anything else (script errors, out of memory, ...) ->
    ``StoreError``.
    """
    errors = _redis().exceptions
    message = f"Redis store {shown}: {type(exc).__name__}: {exc}"
    if isinstance(exc, errors.TimeoutError):
        return StoreTimeout(message)
    if isinstance(exc, errors.ConnectionError | errors.ReadOnlyError):
        return StoreUnavailable(message)  # BusyLoading, Authentication, MasterNotFound too
    text = str(exc)
    if text.startswith(("LOADING", "MASTERDOWN", "READONLY", "NOAUTH")):
        return StoreUnavailable(message)
    return StoreError(message)


class RedisStore:
    """A :class:`~prismcache.stores.base.DocumentStore` and
    :class:`~prismcache.sync.ChangeFeed` in one Redis, shared by any number of processes.

    ``client`` is a ``redis.Redis`` (``decode_responses=False``), for example from a Sentinel's
    ``master_for(...)``; ``feed_client`` one for the blocking reads of the change feed (its
    socket timeout must exceed the block time; by default ``client`` is used and reads block
    at most half its socket timeout). ``shown`` is how the store names itself in messages.
    Connects once to check the server (Redis >= 7.0, not in cluster mode): raises
    :class:`StoreUnavailable` when it cannot, :class:`ConfigError` for a cluster.
    """

    def __init__(self, client: Any, *, prefix: str = "prism:", stream_maxlen: int = 100_000,
                 feed_client: Any = None, shown: str = "redis") -> None:
        if not prefix:
            raise ConfigError("a Redis store prefix must not be empty (e.g. 'prism:')")
        if int(stream_maxlen) < 1:
            raise ConfigError(f"stream_maxlen must be >= 1, got {stream_maxlen!r}")
        self._client = client
        self._feed_client = feed_client
        self._prefix = prefix
        self._maxlen = str(int(stream_maxlen))
        self._shown = shown
        self._epoch = secrets.token_hex(8)
        self._closed = False
        self._put = client.register_script(_PUT)
        self._touch = client.register_script(_TOUCH)
        self._delete = client.register_script(_DELETE)
        self._expire = client.register_script(_EXPIRE)
        self._evict = client.register_script(_EVICT)
        self._evict_for = client.register_script(_EVICT_FOR)
        self._find = client.register_script(_FIND)
        self._usage = client.register_script(_USAGE)
        with self._session():
            info = client.info("server")
            cluster = client.info("cluster")
        version = tuple(int(p) for p in str(info.get("redis_version", "0.0")).split(".")[:2])
        if version < _MIN_VERSION:
            raise StoreUnavailable(f"Redis store {shown} runs Redis {info.get('redis_version')};"
                                   " prismcache needs >= 7.0")
        if cluster.get("cluster_enabled"):
            raise ConfigError(f"Redis store {shown} is a Redis Cluster, which prismcache does "
                              "not support; see docs/deployment.md")

    @classmethod
    def from_url(cls, url: str, *, prefix: str | None = None,
                 socket_timeout: float | None = None, connect_timeout: float | None = None,
                 stream_maxlen: int | None = None) -> RedisStore:
        """Open ``redis://[[user]:password@]host[:port][/db][?options]`` or ``rediss://``.

        Options, as keyword arguments or in the query string (keywords win): ``prefix``
        (``prism:``), ``socket_timeout`` and ``connect_timeout`` in seconds (0.5 each),
        ``stream_maxlen`` (100000). Other query options go to redis-py's ``from_url``.
        ``cluster=...`` is refused: Redis Cluster is not supported.
        """
        redis = _redis()
        shown = redact_url(url)
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in _OPTIONS:
                ours[name] = value
            else:
                rest.append((name, value))
        if any(name.lower() == "cluster" for name, _ in rest):
            raise ConfigError(f"Redis Cluster is not supported ({shown}); use one Redis or "
                              "Sentinel, see docs/deployment.md")
        try:
            prefix = prefix if prefix is not None else ours.get("prefix", "prism:")
            timeout = float(socket_timeout if socket_timeout is not None
                            else ours.get("socket_timeout", 0.5))
            connect = float(connect_timeout if connect_timeout is not None
                            else ours.get("connect_timeout", 0.5))
            maxlen = int(stream_maxlen if stream_maxlen is not None
                         else ours.get("stream_maxlen", 100_000))
        except ValueError as exc:
            raise ConfigError(f"bad option in Redis store URL {shown}: {exc}") from exc
        if not (timeout > 0 and connect > 0):
            raise ConfigError(f"Redis store timeouts must be > 0 seconds ({shown})")
        plain = urlunsplit(parts._replace(query=urlencode(rest)))
        retry = redis.retry.Retry(redis.backoff.NoBackoff(), 1)  # one reconnect, no sleeping

        def client(read_timeout: float) -> Any:
            return redis.Redis.from_url(plain, socket_timeout=read_timeout,
                                        socket_connect_timeout=connect, retry=retry,
                                        health_check_interval=0)

        try:
            main, feed = client(timeout), client(timeout + 2.0)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad Redis store URL {shown}: {exc}") from exc
        try:
            return cls(main, prefix=prefix, stream_maxlen=maxlen, feed_client=feed, shown=shown)
        except BaseException:
            main.close()
            feed.close()
            raise

    @property
    def prefix(self) -> str:
        """The prefix of every key this store uses."""
        return self._prefix

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
                fields += [name, _scalar(value)]
        ref_json = _ref_json(record)
        event: list[Any] = ["op", "put", "id", _key(record.id), "ref", ref_json,
                            "embedder", record.embedder]
        if record.vector is not None:
            event += ["vector", record.vector]
        args = [
            _key(record.id), ref_json, repr(record.priority),
            _member(record.last_access, record.id), record.category, record.tenant,
            record.model, str(record.size),
            "" if record.expires is None else repr(record.expires), self._epoch, len(fields),
            *fields, *event,
        ]
        self._run(self._put, args)

    def get(self, entry_id: int) -> Entry | None:
        """The entry with ``entry_id``, or ``None`` (also when Redis expired its hash, which
        is then unindexed); expired entries not yet removed are still returned."""
        key = _valid(entry_id)
        if key is None:
            return None
        with self._session():
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(self._prefix + "e:" + key)
            pipe.hexists(self._prefix + "refs", key)
            found, indexed = pipe.execute()
        if not found:
            if indexed:
                self._run(self._delete, ["gone", key])
            return None
        return decode(_record(found))

    def touch(self, entry_id: int, *, now: float, priority: float) -> None:
        """Record a hit on ``entry_id`` and move it in its category's eviction order; a
        missing id is ignored."""
        key = _valid(entry_id)
        if key is not None:
            self._run(self._touch, [key, repr(float(now)), repr(float(priority)),
                                    _member(float(now), int(entry_id))])

    def delete(self, entry_ids: Iterable[int]) -> list[EntryRef]:
        """Delete ``entry_ids`` (scripts of 512 ids, each atomic); refs of those that existed."""
        keys = [k for k in map(_valid, entry_ids) if k is not None]
        refs: list[EntryRef] = []
        for start in range(0, len(keys), _BATCH):
            refs += _refs(self._run(self._delete, ["all", *keys[start:start + _BATCH]]))
        return refs

    def find(
        self,
        *,
        tenant: str | None = None,
        category: str | None = None,
        model: str | None = None,
    ) -> list[EntryRef]:
        """Refs of the entries matching every given filter, from the tenant/model sets and
        the category's eviction index (one script: O(matches), all at once)."""
        args: list[str] = []
        for value in (tenant, category, model):
            args += ["0", ""] if value is None else ["1", value]
        return _refs(self._run(self._find, args))

    def evict_over(
        self, category: str, *, max_entries: int | None, max_bytes: int | None
    ) -> list[EntryRef]:
        """Delete the lowest ``(priority, last_access, id)`` entries of ``category`` until it
        is within both limits, in one script reading the usage counters first (O(1) within the
        limits, O(k log n) to evict k); refs in eviction order."""
        args = [category, "" if max_entries is None else str(int(max_entries)),
                "" if max_bytes is None else str(int(max_bytes))]
        return _refs(self._run(self._evict, args))

    def evict_for(self, category: str, quotas: Quotas) -> list[EntryRef]:
        """Delete entries until every limit of ``quotas`` holds, victims chosen as by
        :meth:`Quotas.next_victim` (restated in the script), atomically in one script that
        reads the usage counters first (O(categories) within the limits, O(k (categories +
        log n)) to evict k); refs in eviction order."""
        names = sorted(set(quotas.shares) | set(quotas.ceilings))
        args = [category, str(int(quotas.capacity_entries)),
                "" if quotas.capacity_bytes is None else str(int(quotas.capacity_bytes)),
                str(len(names))]
        for name in names:
            ceiling = quotas.ceilings.get(name)
            args += [name, repr(float(quotas.shares.get(name, 0.0))),
                     "" if ceiling is None else repr(float(ceiling))]
        return _refs(self._run(self._evict_for, args))

    def expire(self, now: float) -> list[EntryRef]:
        """Delete every entry with ``expires <= now``; return their refs, and those of
        entries whose hash Redis already expired (reconciled at the same time)."""
        refs: list[EntryRef] = []
        while True:
            out = self._run(self._expire, [repr(float(now)), str(_BATCH)])
            refs += _refs(out[1:])
            if int(out[0]) < _BATCH:
                return refs

    def scan(self, *, since: float | None = None, documents: bool = True) -> Iterator[Entry]:
        """Yield every entry (``created >= since`` when given), in id order, pages of 512 ids
        read by keyset pagination of the id index; ``documents=False`` does not read the JSON
        fields. Entries present for the whole scan are yielded exactly once."""
        after = "-"
        ids_key = self._prefix + "ids"
        while True:
            with self._session():
                page = self._client.zrange(ids_key, after, "+", bylex=True, offset=0,
                                           num=_BATCH)
                if not page:
                    return
                pipe = self._client.pipeline(transaction=False)
                for key in page:
                    entry_key = self._prefix + "e:" + key.decode()
                    if documents:
                        pipe.hgetall(entry_key)
                    else:
                        pipe.hmget(entry_key, _INDEX_FIELDS)
                rows = pipe.execute()
            for row in rows:
                if documents:
                    if row:
                        entry = decode(_record(row))
                    else:
                        continue
                else:
                    if row[0] is None:
                        continue
                    entry = decode(_record(dict(zip(_INDEX_FIELDS, row, strict=True)),
                                           documents=False), documents=False)
                if since is None or entry.created >= since:
                    yield entry
            after = b"(" + page[-1]

    def usage(self) -> dict[str, UsageCount]:
        """Entries and bytes per category, from the script-maintained counters."""
        flat = self._run(self._usage, [])
        counts: dict[str, list[int]] = {}
        for name, value in zip(flat[::2], flat[1::2], strict=True):
            kind, _, category = name.decode().partition(":")
            counts.setdefault(category, [0, 0])[kind == "b"] = int(value)
        return {c: UsageCount(entries=n, bytes=b) for c, (n, b) in counts.items() if n > 0}

    def close(self) -> None:
        """Close the connection pools; later calls raise :class:`StoreUnavailable`."""
        if self._closed:
            return
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

    # -- the change feed ----------------------------------------------------------------------

    def latest_cursor(self) -> str:
        """A cursor after every change logged so far: ``<epoch>/<stream id>/<entries added>``.

        The epoch names this incarnation of the stream (a Redis restarted empty, or a
        ``FLUSHDB``, starts another); the count of entries ever added detects trimming: entries
        after the cursor were lost when more were trimmed than the cursor had seen.
        """
        with self._session():
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._prefix + "epoch", self._epoch, nx=True)
            pipe.get(self._prefix + "epoch")
            pipe.xinfo_stream(self._prefix + "changes")
            _, epoch, info = pipe.execute(raise_on_error=False)
        if isinstance(info, Exception):
            return f"{_text(epoch)}/{_NO_STREAM}/0"
        return f"{_text(epoch)}/{_text(info['last-generated-id'])}/{int(info['entries-added'])}"

    def read_changes(self, cursor: str, *, block_ms: int = 250, limit: int = 1000) -> ChangeBatch:
        """Up to ``limit`` changes after ``cursor``, waiting up to ``block_ms`` when there are
        none. ``behind`` when the stream was trimmed past ``cursor`` or recreated since."""
        try:
            epoch, last, seen_text = cursor.split("/")
            seen = int(seen_text)
        except ValueError:
            return ChangeBatch([], cursor, behind=True)  # not one of ours: start over
        batch = self._read(epoch, last, seen, limit)
        if batch.changes or batch.behind or block_ms <= 0:
            return batch
        client = self._feed_client
        if client is None:  # blocking on the operations' client: stay inside its timeout
            client = self._client
            block_ms = min(block_ms, int(client.connection_pool.connection_kwargs.get(
                "socket_timeout", 1.0) * 500))
        with self._session():
            woke = client.xread({self._prefix + "changes": last}, count=1,
                                block=max(1, block_ms))
        return self._read(epoch, last, seen, limit) if woke else batch

    def _read(self, epoch: str, last: str, seen: int, limit: int) -> ChangeBatch:
        """One atomic look at the stream (MULTI): its epoch, counters and the entries after
        ``last``; ``seen`` is how many entries had been added up to ``last``."""
        stream = self._prefix + "changes"
        with self._session():
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self._prefix + "epoch")
            pipe.xinfo_stream(stream)
            pipe.xrange(stream, min="(" + last, max="+", count=limit)
            current, info, rows = pipe.execute(raise_on_error=False)
        if isinstance(rows, Exception):
            raise _translate(rows, self._shown)
        cursor = f"{epoch}/{last}/{seen}"
        if current is None or _text(current) != epoch:
            return ChangeBatch([], cursor, behind=True)  # the stream was recreated
        if isinstance(info, Exception):  # no stream yet: nothing logged in this epoch
            return ChangeBatch([], cursor)
        trimmed = int(info["entries-added"]) - int(info["length"])  # we never XDEL
        if trimmed > seen:
            return ChangeBatch([], cursor, behind=True)  # entries after the cursor are gone
        changes = [_change(fields) for _, fields in rows]
        if rows:
            cursor = f"{epoch}/{_text(rows[-1][0])}/{seen + len(rows)}"
        return ChangeBatch(changes, cursor)

    # -- internals ------------------------------------------------------------------------------

    def _run(self, script: Any, args: list[Any]) -> Any:
        with self._session():
            return script(args=[self._prefix, self._maxlen, *args])

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
        except _redis().RedisError as exc:
            raise _translate(exc, self._shown) from exc


def _valid(entry_id: int) -> str | None:
    """The 19-digit key of a valid id, or ``None`` (such an id cannot be stored)."""
    value = int(entry_id)
    return f"{value:019d}" if 0 < value < _MAX_ID else None


def _key(entry_id: int) -> str:
    return f"{entry_id:019d}"


def _member(last_access: float, entry_id: int) -> str:
    """Eviction-order member: sortable hex of ``last_access`` then the 19-digit id, so equal
    priorities order by last access, then id (lexicographic order within a score)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", last_access))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return f"{bits:016x}{entry_id:019d}"


def _scalar(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return value


def _ref_json(record: Record) -> str:
    return json.dumps(
        [record.category, record.partition, record.exact_key, str(record.size),
         repr(record.priority), record.tenant, record.model,
         _member(record.last_access, record.id)],
        ensure_ascii=False, separators=(",", ":"),
    )


def _refs(flat: list[Any]) -> list[EntryRef]:
    """Refs from a script's ``[id, ref json, id, ref json, ...]``."""
    return [_ref(key, blob) for key, blob in zip(flat[::2], flat[1::2], strict=True)]


def _ref(key: bytes | str, blob: bytes | str) -> EntryRef:
    category, partition, exact_key, size, priority, *_ = json.loads(blob)
    return EntryRef(id=int(key), partition=partition, category=category, exact_key=exact_key,
                    size=int(size), priority=float(priority))


def _record(row: dict[Any, bytes], *, documents: bool = True) -> Record:
    """A :class:`Record` from an entry hash (field names as bytes or str)."""
    values: dict[str, Any] = {}
    for raw_name, raw in row.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        if raw is None:
            continue
        if name in _BYTES:
            values[name] = raw
        elif name in _INTS:
            values[name] = int(raw)
        elif name in _FLOATS:
            values[name] = float(raw)
        else:
            values[name] = raw.decode("utf-8")
    if not documents:
        values.update(request=b"{}", response=b"{}", chunks=None)
    try:
        return Record(**{name: values.get(name) for name in FIELDS})
    except TypeError as exc:
        raise StoreError(f"stored entry is malformed: {exc}") from exc


def _change(fields: dict[bytes, bytes]) -> Change:
    ref = _ref(fields[b"id"], fields[b"ref"])
    if fields[b"op"] == b"delete":
        return Change(op="delete", ref=ref)
    vector = fields.get(b"vector")
    return Change(op="put", ref=ref, embedder=fields.get(b"embedder", b"").decode(),
                  vector=None if vector is None else _decode_vector(vector))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

