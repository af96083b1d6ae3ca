"""Fewer errors and upstream calls while the upstream is overloaded: near answers, and a gate.

When the upstream refuses a missed request with 429 or 503, or the proxy's call to it times out
(504), the client would get an error. If the request's category allows it (a
``fallback_threshold`` in its policy) and the lookup found a candidate at or above that bound
(but below the category's threshold: :attr:`~prismcache.results.Miss.near_entry`), the proxy
serves that candidate instead, marked ``X-Prism-Cache: near`` with ``X-Prism-Similarity``,
``X-Prism-Age`` and ``X-Prism-Entry``, and counts it in ``prismcache_fallback_total``, apart
from hits. The candidate must still pass the category's guards, be unexpired, and belong to
the request's partition (it was found by a search within that partition; this is checked
again on the document). Categories without a ``fallback_threshold`` (``volatile`` and ``math``
by default) pass the upstream's error through unchanged.

**The upstream gate** (:class:`UpstreamGate`, ``server.upstream_gate``): the proxy limits its
own upstream calls in flight, additive-increase/multiplicative-decrease on the upstream's
answers (x0.75 of the calls in flight on a 429/503/timeout, +1/limit on a success), and holds
calls beyond the limit in a FIFO queue for at most ``server.upstream_queue_wait`` before sending
them anyway. A burst past the upstream's capacity then waits instead of being refused, and the
flights waiting in the queue take on identical and similar followers
(:mod:`prismcache.server.coalesce`), so fewer calls reach the upstream at all.

A near answer is a trade the operator opts into per category: while the upstream refuses, the
alternative is an error, not a fresh answer; a wrong answer is still worse than a miss, so the
bound stays well above what a ``general`` paraphrase search would accept (``docs/economics.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from prismcache import guards
from prismcache.cache import SemanticCache
from prismcache.errors import StoreError
from prismcache.request import Context, RequestKey, context_of
from prismcache.results import Hit, Miss
from prismcache.server.sse import replay
from prismcache.server.state import ProxyState
from prismcache.server.wire import json_response, prism_headers
from prismcache.streams import completion_of

__all__ = ["OVERLOADED", "UpstreamGate", "fallback", "near_hit"]

log = logging.getLogger("prismcache.server")

#: upstream answers that mean "overloaded": rate limited, unavailable, timed out (the proxy's 504)
OVERLOADED = frozenset({429, 503, 504})


def near_hit(cache: SemanticCache, key: RequestKey, miss: Miss, *,
             now: float | None = None) -> Hit | None:
    """The near candidate of ``miss`` as a servable :class:`Hit`, or ``None`` when the policy
    sets no fallback, the candidate is gone, expired, of another partition, conversation
    context (near answers need the same earlier turns exactly) or category, below the bound,
    or rejected by the category's guards. Reads the store once; a store error is
    logged and gives ``None`` (the upstream's error is passed through)."""
    if miss.near_entry is None or miss.near_similarity is None or miss.category is None:
        return None
    policy = cache.policy_for(miss.category, key.model)
    bound = policy.fallback_threshold
    if bound is None or miss.near_similarity < bound:
        return None
    try:
        entry = cache.document_store.get(miss.near_entry)
    except StoreError as exc:
        log.warning("prismcache: near answer unavailable: %s", exc)
        return None
    now = time.time() if now is None else now
    if (entry is None or entry.partition != key.partition or entry.category != miss.category
            or entry.expired(now)
            or (policy.ttl is not None and now >= entry.created + policy.ttl.total_seconds())
            or guards.check(key.query, entry.query, policy.guards) is not None
            or _context_key(context_of(entry.request)) != _context_key(key.context)):
        return None
    return Hit(entry_id=entry.id, similarity=miss.near_similarity, category=entry.category,
               response=entry.response, chunks=entry.chunks, age=max(0.0, now - entry.created))


def _context_key(context: Context | None) -> str | None:
    return None if context is None else context.key


async def fallback(state: ProxyState, *, endpoint: str, key: RequestKey, body: Mapping[str, Any],
                   stream: bool, result: Hit | Miss | None,
                   response: Response) -> Response | None:
    """A ``near`` answer in place of ``response`` when the upstream answered it with an
    overload status and the lookup ``result`` holds an acceptable near candidate; else
    ``None`` (serve ``response``)."""
    if response.status_code not in OVERLOADED or not isinstance(result, Miss):
        return None
    if result.near_entry is None:
        return None
    hit = await state.in_thread(near_hit, state.cache, key, result)
    if hit is None:
        return None
    state.metrics.fallbacks.inc(endpoint, key.tenant, hit.category, "near")
    answer = completion_of(hit.response, hit.chunks)
    headers = prism_headers(hit, state="near")
    headers["x-prism-upstream-status"] = str(response.status_code)
    if stream:
        options = body.get("stream_options")
        usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return Response(b"".join(replay(answer, hit.chunks, include_usage=usage)),
                        headers=headers, media_type="text/event-stream")
    return json_response(answer, headers=headers)


class UpstreamGate:
    """An adaptive limit on upstream calls in flight with a bounded FIFO queue (AIMD: see the
    module docstring). Used from the event loop only.

    ``acquire`` waits for a slot at most ``max_wait`` seconds, then proceeds anyway (counted in
    ``timed_out``); every ``acquire`` is paired with one ``release``; ``observe`` feeds the
    status of each finished call (0 for a call that ended without one).
    """

    def __init__(self, *, max_wait: float, initial: float = 64.0, ceiling: float = 1024.0) -> None:
        if max_wait < 0 or not 1.0 <= initial <= ceiling:
            raise ValueError("max_wait must be >= 0 and 1 <= initial <= ceiling")
        self.max_wait = max_wait
        self.limit = initial
        self.ceiling = ceiling
        self.inflight = 0
        self.queued = 0  # calls that had to wait, since start
        self.timed_out = 0  # ... of them, sent without a slot after max_wait
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in line at most ``max_wait`` seconds."""
        if self.inflight < int(self.limit) and not self._waiters:
            self.inflight += 1
            return
        self.queued += 1
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), self.max_wait)
        except TimeoutError:
            if slot.done():
                return  # handed over just as the wait ran out: the slot is ours
            self._waiters.remove(slot)
            slot.cancel()
            self.timed_out += 1
            self.inflight += 1  # sent anyway: the upstream decides
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.release()  # handed over to a caller that left: pass it on
            elif slot in self._waiters:
                self._waiters.remove(slot)
            raise

    def release(self) -> None:
        """Give back a slot; the longest waiter gets it when the limit allows."""
        self.inflight -= 1
        while self._waiters and self.inflight < int(self.limit):
            slot = self._waiters.popleft()
            if not slot.done():
                self.inflight += 1
                slot.set_result(None)

    def observe(self, status: int) -> None:
        """Adapt the limit to the status of a finished call (before its ``release``)."""
        if status in OVERLOADED:
            self.limit = max(1.0, min(self.limit, self.inflight) * 0.75)
        elif 0 < status < 400:
            self.limit = min(self.ceiling, self.limit + 1.0 / self.limit)
