"""The change feed of :class:`~prismcache.stores.redis.RedisStore` (:mod:`prismcache.sync`):
one stream per bucket (``P changes``, written by the store's scripts), its epoch (``P epoch``)
and the cursors over them. :class:`RedisChangeFeed` is a base class of ``RedisStore`` and reads
the state the store sets up (clients, bucket namespaces, ``_fan``, ``_session``); it is not
used alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from prismcache.stores import redis_records as rec
from prismcache.stores.redis_connect import translate as _translate
from prismcache.sync import Change, ChangeBatch

__all__ = ["Command", "RedisChangeFeed"]

Command = tuple[str, str, tuple[Any, ...], dict[str, Any]]  # space, method, args, kwargs
_NO_STREAM = "0-0"
# A cluster's feed is polled (XREAD cannot block on streams of several slots): every 20 ms, or
# 1 ms per bucket when more, so an idle poll (about 0.05 ms of CPU per bucket) stays ~5% of a core.
_POLL_S = 0.02
_POLL_PER_BUCKET_S = 0.001
_EPOCH_CHECK_S = 1.0  # how often a cluster's idle streams have their epochs checked


class RedisChangeFeed:
    """The :class:`~prismcache.sync.ChangeFeed` methods of the Redis store."""

    _client: Any
    _feed_client: Any
    _spaces: list[str]
    _shown: str
    _next_epoch_check: float
    _fan: Callable[..., list[Any]]
    _session: Callable[[], AbstractContextManager[None]]

    def latest_cursor(self) -> str:
        """A cursor after every change logged so far: ``<epoch>/<stream id>/<entries added>``
        per bucket, joined by ``/``.

        The epoch names this incarnation of a bucket's stream (a Redis restarted empty, or a
        ``FLUSHDB``, starts another); the count of entries ever added detects trimming: entries
        after the cursor were lost when more were trimmed than the cursor had seen.
        """
        commands: list[Command] = []
        for space in self._spaces:
            commands += [(space, "set", (space + "epoch", rec.new_epoch()), {"nx": True}),
                         (space, "get", (space + "epoch",), {}),
                         (space, "xinfo_stream", (space + "changes",), {})]
        replies = self._fan(commands, raise_on_error=False)
        parts = []
        for n in range(len(self._spaces)):
            _, epoch, info = replies[3 * n:3 * n + 3]
            if isinstance(epoch, Exception):
                raise _translate(epoch, self._shown)
            if isinstance(info, Exception):
                parts.append(f"{rec.text(epoch)}/{_NO_STREAM}/0")
            else:
                parts.append(f"{rec.text(epoch)}/{rec.text(info['last-generated-id'])}/"
                             f"{int(info['entries-added'])}")
        return "/".join(parts)

    def read_changes(self, cursor: str, *, block_ms: int = 250, limit: int = 1000) -> ChangeBatch:
        """Up to ``limit`` changes per bucket after ``cursor``, waiting up to ``block_ms`` when
        there are none (on a cluster, one poll interval: 20 ms, or 1 ms per bucket past 20).
        ``behind`` when a stream was trimmed past ``cursor`` or recreated since. Changes of one
        entry keep their order (an entry's events are all in its bucket's stream)."""
        words = cursor.split("/")
        if len(words) != 3 * len(self._spaces):
            return ChangeBatch([], cursor, behind=True)  # not one of ours: start over
        try:
            marks = [(words[i], words[i + 1], int(words[i + 2])) for i in range(0, len(words), 3)]
        except ValueError:
            return ChangeBatch([], cursor, behind=True)
        batch = self._read(marks, limit)
        if batch.changes or batch.behind or block_ms <= 0:
            return batch
        if len(self._spaces) > 1:
            time.sleep(min(block_ms / 1000,
                           max(_POLL_S, _POLL_PER_BUCKET_S * len(self._spaces))))
            return self._read(marks, limit)
        client = self._feed_client
        if client is None:  # blocking on the operations' client: stay inside its timeout
            client = self._client
            block_ms = min(block_ms, int(client.connection_pool.connection_kwargs.get(
                "socket_timeout", 1.0) * 500))
        with self._session():
            woke = client.xread({self._spaces[0] + "changes": marks[0][1]}, count=1,
                                block=max(1, block_ms))
        return self._read(marks, limit) if woke else batch

    def _read(self, marks: list[tuple[str, str, int]], limit: int) -> ChangeBatch:
        """One look at every bucket's stream: the entries after its mark; then, for the
        streams that had some, their counters and epoch (read after the entries, so a trim or
        a recreation before or during the read is seen). A stream with nothing after its mark
        needs no counters (trimming, MAXLEN >= 1, never removes the newest entries), only its
        epoch, to notice a Redis restarted empty: checked on every read of one Redis, once a
        second on a cluster (where it would double the commands of a poll)."""
        rows_of = self._fan([(space, "xrange", (space + "changes",),
                              {"min": "(" + last, "max": "+", "count": limit})
                             for space, (_, last, _) in zip(self._spaces, marks, strict=True)],
                            raise_on_error=False)
        for rows in rows_of:
            if isinstance(rows, Exception):
                raise _translate(rows, self._shown)
        news = [n for n, rows in enumerate(rows_of) if rows]
        now = time.monotonic()
        every = len(self._spaces) == 1 or now >= self._next_epoch_check
        if every:
            self._next_epoch_check = now + _EPOCH_CHECK_S
        quiet = [n for n, rows in enumerate(rows_of) if not rows] if every else []
        checks: list[Command] = []
        for n in news:
            space = self._spaces[n]
            checks += [(space, "xinfo_stream", (space + "changes",), {}),
                       (space, "get", (space + "epoch",), {})]
        checks += [(self._spaces[n], "get", (self._spaces[n] + "epoch",), {}) for n in quiet]
        replies = self._fan(checks, raise_on_error=False) if checks else []
        behind = ChangeBatch([], "/".join(w for m in marks for w in map(str, m)), behind=True)
        for n, current in zip(quiet, replies[2 * len(news):], strict=True):
            if current is None or isinstance(current, Exception) or (
                    rec.text(current) != marks[n][0]):
                return behind  # the stream is gone or was recreated (a restart, FLUSHDB)
        changes: list[Change] = []
        parts = [f"{epoch}/{last}/{seen}" for epoch, last, seen in marks]
        for k, n in enumerate(news):
            info, current = replies[2 * k:2 * k + 2]
            epoch, _, seen = marks[n]
            if current is None or isinstance(current, Exception) or rec.text(current) != epoch:
                return behind  # the stream was recreated
            if isinstance(info, Exception):
                raise _translate(info, self._shown)
            if int(info["entries-added"]) - int(info["length"]) > seen:  # we never XDEL
                return behind  # entries after the cursor were trimmed
            rows = rows_of[n]
            changes += [rec.change(fields) for _, fields in rows]
            parts[n] = f"{epoch}/{rec.text(rows[-1][0])}/{seen + len(rows)}"
        return ChangeBatch(changes, "/".join(parts))
