"""Work after the reply: a fresh upstream answer is released to its clients first and stored
off the response path.

:class:`AfterReply` runs each piece of such work (the store of one answer) as a task of its
own. Two promises keep it as safe as storing before the reply:

* **An identical request after completion still hits.** The work is registered under the
  request's exact key *before* the answer's last byte is released; a request with that key
  that arrives while the work is pending waits for it (bounded by ``wait``) before its lookup.
* **Nothing is lost silently.** A task that raises is logged and reported to its
  ``on_error`` callback (the proxy counts it as a store error); at shutdown :meth:`drain`
  waits for the pending work; past ``limit`` pending tasks, :meth:`run` drops the work and
  says so (the caller counts it): a response never waits for a store. A dropped store only
  costs a later hit (an identical request then misses).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["AfterReply", "EmbedAhead"]

log = logging.getLogger("prismcache.server")


class AfterReply:
    """Pending work after replies, by exact key. Used from the event loop only."""

    def __init__(self, *, limit: int = 256, wait: float = 2.0) -> None:
        """``limit``: tasks pending at most; past it :meth:`run` drops the work;
        ``wait``: seconds a request waits for the pending work of its key."""
        self.limit = limit
        self.wait = wait
        self.failures = 0  # tasks that raised (each also went to its on_error)
        self.dropped = 0  # work refused with `limit` tasks pending
        self._by_key: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def run(self, key: str | None, work: Coroutine[Any, Any, None],
                  on_error: Callable[[BaseException], None]) -> bool:
        """Run ``work`` in the background, registered under ``key`` (``None``: not waited
        for by anyone) until it ends; call before the reply's end is released. Returns at
        once: ``True``, or ``False`` when ``limit`` tasks are pending already and ``work``
        was dropped (closed, never run; counted in :attr:`dropped`)."""
        if len(self._tasks) >= self.limit:
            work.close()
            self.dropped += 1
            return False
        task = asyncio.create_task(self._guarded(work, on_error))
        self._tasks.add(task)
        if key is not None:
            self._by_key[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return True

    async def settled(self, key: str, hurry: Callable[[], None] | None = None) -> bool:
        """Wait (at most ``wait`` seconds) for the pending work registered under ``key``, if
        any, calling ``hurry`` first when there is some (a request waits for it: work that
        was batching up should go now). Returns ``False`` only when that work is still
        running after the wait."""
        task = self._by_key.get(key)
        if task is None:
            return True
        if hurry is not None:
            hurry()
        done, _ = await asyncio.wait({task}, timeout=self.wait)  # never cancels the work
        return bool(done)

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every pending task (at shutdown); returns how
        many were still running when the wait ended (they are then cancelled)."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d stores after reply still pending at shutdown: cancelled",
                        len(pending))
        return len(pending)

    async def _guarded(self, work: Awaitable[None],
                       on_error: Callable[[BaseException], None]) -> None:
        try:
            await work
        except Exception as exc:  # a bug or a store that broke: counted and logged, never lost
            self.failures += 1
            log.exception("work after the reply failed")
            on_error(exc)

    def _forget(self, key: str | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if key is not None and self._by_key.get(key) is task:
            del self._by_key[key]


class EmbedAhead:
    """Embeds the queries of the stores after replies together, in one model call per batch.

    A store after a reply embeds its query (the pre-filter lets a far miss's lookup skip the
    model, so its store is the first to need the vector). Alone, each pays a model call of
    its own; these are not latency-bound, so :meth:`ready` holds each store up to
    ``max_wait`` seconds for others (or until ``max_batch`` queries are queued), then ``embed``
    runs them in one call and leaves the vectors where the stores find them (the cache's
    memo). A request identical to a pending store does not wait for the batch:
    :meth:`hurry` sends it at once. ``max_wait`` 0: off (each store embeds by itself).
    Used from the event loop only.
    """

    def __init__(self, embed: Callable[[list[str]], Awaitable[Any]], *, max_wait: float,
                 max_batch: int) -> None:
        """``embed``: embeds a batch of queries and keeps their vectors for the stores
        (e.g. :meth:`prismcache.SemanticCache.embed_ahead` on a worker thread)."""
        self._embed = embed
        self.max_wait, self.max_batch = max_wait, max_batch
        self.batches = self.texts = self.failures = 0
        self._queries: list[str] = []
        self._done: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def ready(self, query: str) -> None:
        """Return once ``query`` was embedded with the batch it joined (at most about
        ``max_wait`` seconds, plus the model call). Never raises for a failed batch: the
        store then embeds by itself (and fails open, counted, as it would have)."""
        if self.max_wait <= 0:
            return
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self.hurry)
        done = self._done
        self._queries.append(query)
        if len(self._queries) >= self.max_batch:
            self.hurry()
        await asyncio.wait([done])  # a cancelled store leaves the batch to the others

    def hurry(self) -> None:
        """Send the queries queued so far now (a request waits for one of their stores)."""
        if self._done is None:
            return
        queries, done, self._queries, self._done = self._queries, self._done, [], None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.create_task(self._batch(queries, done))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _batch(self, queries: list[str], done: asyncio.Future[None]) -> None:
        try:
            await self._embed(queries)
            self.batches += 1
            self.texts += len(queries)
        except Exception as exc:  # noqa: BLE001 - each store embeds by itself then
            self.failures += 1
            log.debug("stores' queries not embedded ahead (%s): each store embeds its own",
                      exc)
        finally:
            done.set_result(None)
