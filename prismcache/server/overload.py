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
answers (x0.75 of the calls in flight on a 429/503/timeout, +1/limit on a success; past the
level that drew the last refusal, ``probe_slowdown`` times slower: every probe above a known
ceiling costs a refused call, which is an upstream request too), and holds
calls beyond the limit in a FIFO queue for at most ``server.upstream_queue_wait`` before sending
them anyway (or shedding them: below). A burst past the upstream's capacity then waits instead of being refused, and the
flights waiting in the queue take on identical and similar followers
(:mod:`prismcache.server.coalesce`), so fewer calls reach the upstream at all.

**Shedding** (``server.upstream_shed``): while the upstream has refused a call
(429/503/timeout) within the last ``server.load_admission_memory`` seconds, the gate does not
send a call whose wait ran out when sending it would put as many calls in flight as the
upstream last refused at (it would almost surely be refused: a request of the upstream's and
an error for a client that waited the whole ``upstream_queue_wait``); with
``server.upstream_shed_early`` (off by default), nor one that joins the queue behind more
calls than the recent release rate clears within that wait (shed at once: the client fails
fast). The proxy answers such a call itself, exactly as if the upstream had refused it: a
near or stale answer where the category allows one (below), marked ``X-Prism-Shed:
upstream-saturated`` instead of ``X-Prism-Upstream-Status``, else a 429 with ``Retry-After``
(seconds, the queue's length over its drain rate), ``X-Prism-Shed`` and OpenAI's
``rate_limit_exceeded`` error body. Counted in ``prismcache_upstream_shed_total``
(``reason``: ``waited`` or ``expected``), never in the upstream's metrics; ``/admin/stats``
shows the gate (``proxy.upstream_gate``). A gate that has not seen a refusal lately never
sheds. The gate is one per proxy, across tenants: with per-tenant upstream keys, one tenant's
rate limit holds (and sheds) everyone's calls.

**Stale answers** (``stale_if_error`` per category, seconds; on by default where stale answers
are acceptable: ``code``, ``factual``, ``support``, ``conversation``; never ``math`` or
``volatile``): an entry past its TTL is kept that much longer (the stores' expiry is TTL + the
window) but a lookup never serves it; when the lookup's decision would have served it
(:attr:`~prismcache.results.Miss.stale_entry`) and the upstream answers 429 or any 5xx or
times out, the proxy serves it marked ``X-Prism-Cache: stale`` with ``X-Prism-Age``, counted
as ``kind="stale"`` in ``prismcache_fallback_total``. A stale answer (the same question,
answered earlier) is preferred to a near one (a similar question, answered lately).

**Relief ahead of the upstream** (``relieve`` per category: ``never``, ``stale`` or ``near``):
a near or stale answer in place of an error saves no upstream call, the call was made. So
while the upstream is *saturated*, which the proxy knows from its own gate (a new call would
wait in the gate's queue: :attr:`UpstreamGate.saturated`, the one signal used), a missed
request that would start a new upstream call (no identical or similar flight would take it)
is answered at once, without calling the upstream, with the stale entry the decision would
have served (within ``stale_if_error``) or, where the category says ``near``, else with its
near candidate (at or above ``fallback_threshold``, same guards, partition and context as
above): marked ``X-Prism-Cache: stale`` or ``near`` with ``X-Prism-Similarity``,
``X-Prism-Age``, ``X-Prism-Entry`` and ``X-Prism-Relief: saturated``, counted in
``prismcache_relief_total`` (``proxy.relief`` in ``/admin/stats``), apart from hits and from
answers that replace errors. Everything else queues as before. Shipped: ``near`` for
``support``, ``stale`` for ``code``, ``factual`` and ``conversation``, ``never`` elsewhere
(``math``, ``volatile``, ``creative``, ``general``).

**Admission under load** (:class:`LoadAdmission`, ``server.load_admission_min_reuse``): for
``server.load_admission_memory`` seconds after the upstream last answered 429/503/timeout, an
answer of a category whose entries are seldom reused (hits per stored entry since start below
the bound, once it has ``server.load_admission_min_stores`` stores) is not admitted, so the
capacity goes to the categories whose entries relieve the upstream. Counted per category
(``prismcache_load_admission_skipped_total``, ``/admin/stats``); outside overload it admits
everything (then the configured admission, if any, decides).

A near answer is a trade the operator opts into per category: while the upstream refuses, the
alternative is an error, not a fresh answer; a wrong answer is still worse than a miss, so the
bound stays well above what a ``general`` paraphrase search would accept (``docs/economics.md``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.responses import Response

from prismcache import guards
from prismcache.cache import AdmissionHook, SemanticCache, expired_under, stale_under
from prismcache.config import CategoryPolicy
from prismcache.entry import Entry
from prismcache.errors import StoreError, UpstreamError
from prismcache.request import Context, RequestKey, context_of
from prismcache.results import CategoryStats, Hit, Miss
from prismcache.server.metrics import Counter
from prismcache.server.sse import replay
from prismcache.server.state import ProxyState
from prismcache.server.wire import error_response, json_response, prism_headers
from prismcache.streams import completion_of

__all__ = ["OVERLOADED", "LoadAdmission", "Shed", "UpstreamGate", "fallback", "near_hit",
           "relieve", "shed_response", "stale_hit", "upstream_failed"]

log = logging.getLogger("prismcache.server")

#: upstream answers that mean "overloaded": rate limited, unavailable, timed out (the proxy's 504)
OVERLOADED = frozenset({429, 503, 504})
SHED_HEADER, SHED_VALUE = "x-prism-shed", "upstream-saturated"  #: marks an answer to a shed call
_RATE_SAMPLES = 32  # releases the gate's drain rate is measured over


def upstream_failed(status: int) -> bool:
    """Whether an upstream answer lets a ``stale`` entry be served: 429 or any 5xx (the
    proxy's own 502/504 for a call that failed or timed out included)."""
    return status == 429 or status >= 500


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
    return _servable(cache, key, miss, miss.near_entry, miss.near_similarity, now, stale=False)


def stale_hit(cache: SemanticCache, key: RequestKey, miss: Miss, *,
               now: float | None = None) -> Hit | None:
    """The stale candidate of ``miss`` as a servable :class:`Hit`, or ``None`` when there is
    none, or it is gone, of another partition or category, past the category's
    ``stale_if_error`` window, or rejected by the category's guards. Reads the store once; a
    store error is logged and gives ``None``."""
    if miss.stale_entry is None or miss.category is None:
        return None
    policy = cache.policy_for(miss.category, key.model)
    if policy.stale_if_error <= 0 or policy.ttl is None:
        return None
    return _servable(cache, key, miss, miss.stale_entry, miss.stale_similarity or 0.0, now,
                     stale=True)


def _servable(cache: SemanticCache, key: RequestKey, miss: Miss, entry_id: int,
              similarity: float, now: float | None, *, stale: bool) -> Hit | None:
    """Entry ``entry_id`` as a :class:`Hit` if it is still there, of the request's partition
    and category, unexpired (or, with ``stale``, within its ``stale_if_error`` window), and
    passes the category's guards."""
    assert miss.category is not None  # checked by the callers
    policy = cache.policy_for(miss.category, key.model)
    try:
        entry = cache.document_store.get(entry_id)
    except StoreError as exc:
        log.warning("prismcache: fallback answer unavailable: %s", exc)
        return None
    now = time.time() if now is None else now
    if (entry is None or entry.partition != key.partition or entry.category != miss.category
            or not (stale_under if stale else _fresh)(entry, policy, now)
            or guards.check(key.query, entry.query, policy.guards) is not None
            or _context_key(context_of(entry.request)) != _context_key(key.context)):
        return None
    return Hit(entry_id=entry.id, similarity=similarity, category=entry.category,
               response=entry.response, chunks=entry.chunks, age=max(0.0, now - entry.created))


def _context_key(context: Context | None) -> str | None:
    return None if context is None else context.key


def _fresh(entry: Entry, policy: CategoryPolicy, now: float) -> bool:
    return not expired_under(entry, policy, now)


def _substitute(cache: SemanticCache, key: RequestKey, miss: Miss, *, stale: bool,
                near: bool) -> tuple[Hit, str] | None:
    """The stale answer (preferred) when ``stale`` allows one, else the near one when ``near``
    does: what replaces an upstream error (:func:`fallback`) or an upstream call while the
    upstream is saturated (:func:`relieve`)."""
    if stale and (hit := stale_hit(cache, key, miss)) is not None:
        return hit, "stale"
    if near and (hit := near_hit(cache, key, miss)) is not None:
        return hit, "near"
    return None


async def fallback(state: ProxyState, *, endpoint: str, key: RequestKey, body: Mapping[str, Any],
                   stream: bool, result: Hit | Miss | None,
                   response: Response) -> Response | None:
    """A ``stale`` or ``near`` answer in place of ``response`` when the upstream answered it
    with an error that allows one (see the module docstring), or the gate shed the call
    (:func:`shed_response`: as a 429, marked ``X-Prism-Shed`` instead of
    ``X-Prism-Upstream-Status``), and the lookup ``result`` holds an acceptable candidate;
    else ``None`` (serve ``response``)."""
    status = response.status_code
    shed = response.headers.get(SHED_HEADER)  # the gate's 429: the upstream never saw it
    if state.load_admission is not None and shed is None:
        state.load_admission.observe(status)
    if not isinstance(result, Miss) or not upstream_failed(status):
        return None
    if result.stale_entry is None and (result.near_entry is None or status not in OVERLOADED):
        return None
    found = await state.in_thread(_substitute, state.cache, key, result, stale=True,
                                  near=status in OVERLOADED)
    return _answer(found, state.metrics.fallbacks, endpoint, key, body, stream,
                   {SHED_HEADER: shed} if shed else {"x-prism-upstream-status": str(status)})


async def relieve(state: ProxyState, *, endpoint: str, key: RequestKey, body: Mapping[str, Any],
                  stream: bool, result: Hit | Miss | None,
                  leads: Callable[[], bool]) -> Response | None:
    """A ``stale`` or ``near`` answer served at once, without an upstream call, when the
    upstream is saturated, the missed request's category allows it (``relieve``), the lookup
    ``result`` holds an acceptable candidate and ``leads()`` says the request would start a
    new upstream call (no flight would take it); else ``None`` (call the upstream as usual).
    Costs one attribute read on a miss while the upstream is not saturated."""
    gate = state.coalescer.gate
    if (gate is None or not gate.saturated or not isinstance(result, Miss)
            or result.category is None
            or (result.stale_entry is None and result.near_entry is None)):
        return None
    mode = state.cache.policy_for(result.category, key.model).relieve
    if mode == "never" or (mode == "stale" and result.stale_entry is None) or not leads():
        return None
    found = await state.in_thread(_substitute, state.cache, key, result, stale=True,
                                  near=mode == "near")
    return _answer(found, state.metrics.relief, endpoint, key, body, stream,
                   {"x-prism-relief": "saturated"})


def _answer(found: tuple[Hit, str] | None, counter: Counter, endpoint: str, key: RequestKey,
            body: Mapping[str, Any], stream: bool, extra: Mapping[str, str]) -> Response | None:
    """The ``(hit, kind)`` found served as a ``kind`` (``near``/``stale``) answer, JSON or a
    replayed stream, and counted in ``counter``; ``None`` when nothing was found."""
    if found is None:
        return None
    hit, kind = found
    counter.inc(endpoint, key.tenant, hit.category, kind)
    answer = completion_of(hit.response, hit.chunks)
    headers = {**prism_headers(hit, state=kind), **extra}
    if stream:
        options = body.get("stream_options")
        usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return Response(b"".join(replay(answer, hit.chunks, include_usage=usage)),
                        headers=headers, media_type="text/event-stream")
    return json_response(answer, headers=headers)


class Shed(UpstreamError):
    """A call the gate did not send (:attr:`UpstreamGate.shed`): the upstream refused a call
    lately and this one's wait ran out (``reason="waited"``) or would run out
    (``reason="expected"``). Answered by the proxy itself with 429, ``Retry-After``
    (:attr:`retry_after` seconds) and ``X-Prism-Shed: upstream-saturated``, unless a near or
    stale answer takes its place (:func:`fallback`), as for a refusal of the upstream's."""

    def __init__(self, message: str, *, retry_after: int, reason: str) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after
        self.reason = reason


def shed_response(shed: Shed, headers: Mapping[str, str]) -> Response:
    """The proxy's own answer to a :class:`Shed` call: 429 with ``Retry-After``,
    ``X-Prism-Shed`` and OpenAI's rate-limit error body, plus ``headers``."""
    return error_response(429, str(shed), type="requests", code="rate_limit_exceeded",
                          headers={**headers, "retry-after": str(shed.retry_after),
                                   SHED_HEADER: SHED_VALUE})


class UpstreamGate:
    """An adaptive limit on upstream calls in flight with a bounded FIFO queue (AIMD: see the
    module docstring). Used from the event loop only.

    ``acquire`` waits for a slot at most ``max_wait`` seconds (counted in ``timed_out`` when
    the wait runs out), then proceeds anyway (unless shedding: below); every ``acquire`` that
    returns is paired with one ``release``; ``observe`` feeds the status of each finished call
    (0 for a call that ended without one).

    The calls in flight when the upstream last refused one are its known ceiling
    (:attr:`refused_at`): the limit grows back to one below it at the usual rate and past that
    ``probe_slowdown`` times slower, so a steady overload costs one refused probe per
    ``probe_slowdown`` recoveries instead of one per recovery. A limit that passes the ceiling
    without a refusal forgets it (the upstream took more).

    **Shedding** (``shed``; ``server.upstream_shed``): while the upstream has refused a call
    (429/503/timeout) within the last ``memory`` seconds (:attr:`refusing`), a call whose wait
    runs out is not sent but raises :class:`Shed` when sending it would put as many calls in
    flight as the upstream last refused at (:attr:`refused_at`: it would almost surely be
    refused); below that level it is sent (the gate's limit sits under it after a decrease).
    With ``shed_early`` (``server.upstream_shed_early``) a call is also shed at once when it
    joins the queue behind more calls than the recent release rate clears in ``max_wait``
    (:meth:`expected_wait`). A gate that has not seen a refusal lately never sheds: it sends
    a call whose wait ran out, as without ``shed``.
    """

    def __init__(self, *, max_wait: float, initial: float = 64.0, ceiling: float = 1024.0,
                 probe_slowdown: float = 8.0, shed: bool = False, shed_early: bool = False,
                 memory: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if (max_wait < 0 or not 1.0 <= initial <= ceiling or probe_slowdown < 1.0
                or memory <= 0):
            raise ValueError("max_wait must be >= 0, 1 <= initial <= ceiling, "
                             "probe_slowdown >= 1 and memory > 0")
        self.max_wait = max_wait
        self.limit = initial
        self.ceiling = ceiling
        self.probe_slowdown = probe_slowdown
        self.shed, self.shed_early, self.memory = shed, shed_early, memory
        self.refused_at = float("inf")  # calls in flight when the upstream last refused one
        self.inflight = 0
        self.queued = 0  # calls that had to wait, since start
        self.timed_out = 0  # ... of them, whose wait ran out (sent anyway, or shed)
        self.late: dict[int, int] = {}  # status of the calls sent anyway after their wait
        self.shed_calls = {"waited": 0, "expected": 0}  # calls not sent, by reason
        self._clock = clock
        self._refused_when = float("-inf")  # clock() of the last refusal
        self._released: deque[float] = deque(maxlen=_RATE_SAMPLES)  # clock() of releases
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        """Calls waiting for a slot now."""
        return len(self._waiters)

    @property
    def saturated(self) -> bool:
        """Whether a call starting now would wait in the queue: calls are waiting already, or
        every slot the upstream's answers allow is taken. The proxy's one saturation signal
        (relief ahead of the upstream, :func:`relieve`)."""
        return bool(self._waiters) or self.inflight >= int(self.limit)

    @property
    def refusing(self) -> bool:
        """Whether the upstream refused a call (429/503/timeout) within the last ``memory``
        seconds: the condition for shedding."""
        return self._clock() - self._refused_when < self.memory

    def drain_rate(self) -> float | None:
        """Slots released per second lately: the releases after the oldest of the last
        :data:`_RATE_SAMPLES` over the time from it to now (so the rate falls while nothing is
        released); how fast the queue moves while the limit holds. ``None`` before two
        releases."""
        if len(self._released) < 2:
            return None
        span = self._clock() - self._released[0]
        return (len(self._released) - 1) / span if span > 0 else None

    def expected_wait(self, position: int) -> float | None:
        """Seconds until the call at ``position`` in the queue (1: next) gets a slot, at the
        :meth:`drain_rate`; ``None`` while the rate is unknown."""
        rate = self.drain_rate()
        return None if rate is None else position / rate

    def _shed(self, reason: str) -> Shed:
        self.shed_calls[reason] += 1
        wait = self.expected_wait(len(self._waiters) + 1)
        retry_after = math.ceil(self.max_wait if wait is None else wait)
        return Shed("the upstream is saturated and refused calls lately; retry later",
                    retry_after=max(1, retry_after), reason=reason)

    async def acquire(self) -> bool:
        """Take a slot, waiting in line at most ``max_wait`` seconds. ``True`` once a slot is
        had; ``False`` when the wait ran out and the call goes anyway (pass it to
        :meth:`observe`). Raises :class:`Shed` instead, without a slot, when shedding (see
        the class docstring)."""
        if not self.saturated:
            self.inflight += 1
            return True
        if self.shed_early and self.refusing:
            wait = self.expected_wait(len(self._waiters) + 1)
            if wait is not None and wait > self.max_wait:
                raise self._shed("expected")
        self.queued += 1
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), self.max_wait)
        except TimeoutError:
            if slot.done():
                return True  # handed over just as the wait ran out: the slot is ours
            self._waiters.remove(slot)
            slot.cancel()
            self.timed_out += 1
            if self.shed and self.refusing and self.inflight + 1 >= self.refused_at:
                raise self._shed("waited") from None
            self.inflight += 1  # sent anyway: the upstream decides
            return False
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.release()  # handed over to a caller that left: pass it on
            elif slot in self._waiters:
                self._waiters.remove(slot)
            raise
        return True

    def release(self) -> None:
        """Give back a slot; the longest waiter gets it when the limit allows."""
        self.inflight -= 1
        self._released.append(self._clock())
        while self._waiters and self.inflight < int(self.limit):
            slot = self._waiters.popleft()
            if not slot.done():
                self.inflight += 1
                slot.set_result(None)

    def observe(self, status: int, *, late: bool = False) -> None:
        """Adapt the limit to the status of a finished call (before its ``release``);
        ``late``: the call was sent anyway after its wait ran out (its status is counted in
        :attr:`late`)."""
        if late:
            self.late[status] = self.late.get(status, 0) + 1
        if status in OVERLOADED:
            self._refused_when = self._clock()
            self.refused_at = max(1, self.inflight)
            self.limit = max(1.0, min(self.limit, self.inflight) * 0.75)
        elif 0 < status < 400:
            step = 1.0 / self.limit
            if self.limit + 1.0 >= self.refused_at:  # the next slot is the one refused last
                step /= self.probe_slowdown
            self.limit = min(self.ceiling, self.limit + step)
            if self.limit >= self.refused_at + 1.0:  # took more than it refused: forget
                self.refused_at = float("inf")

    def stats(self) -> dict[str, Any]:
        """The gate's state and counters since start (``/admin/stats``: ``proxy.upstream_gate``)."""
        return {"limit": round(self.limit, 3), "inflight": self.inflight,
                "waiting": len(self._waiters), "refusing": self.refusing,
                "queued": self.queued, "timed_out": self.timed_out,
                "sent_late": {str(k): n for k, n in sorted(self.late.items())},
                "shed": dict(self.shed_calls)}

    def metric_lines(self) -> Iterable[str]:
        """Prometheus lines: calls shed by reason, calls sent late by status, the queue."""
        yield ("# HELP prismcache_upstream_shed_total Missed requests the upstream gate did not "
               "send (answered 429 by the proxy, or near/stale): the upstream refused lately and "
               "their wait ran out (reason=waited) or would have (reason=expected).")
        yield "# TYPE prismcache_upstream_shed_total counter"
        for reason, n in sorted(self.shed_calls.items()):
            yield f'prismcache_upstream_shed_total{{reason="{reason}"}} {n}'
        yield ("# HELP prismcache_upstream_gate_late_total Upstream calls sent after waiting "
               "server.upstream_queue_wait for a slot, by the status they ended with.")
        yield "# TYPE prismcache_upstream_gate_late_total counter"
        for status, n in sorted(self.late.items()):
            yield f'prismcache_upstream_gate_late_total{{status="{status}"}} {n}'
        yield "# HELP prismcache_upstream_gate_queued_total Upstream calls that waited for a slot."
        yield "# TYPE prismcache_upstream_gate_queued_total counter"
        yield f"prismcache_upstream_gate_queued_total {self.queued}"
        yield "# HELP prismcache_upstream_gate_limit The gate's limit on upstream calls in flight."
        yield "# TYPE prismcache_upstream_gate_limit gauge"
        yield f"prismcache_upstream_gate_limit {self.limit:.3f}"
        yield "# HELP prismcache_upstream_gate_waiting Calls waiting for a slot now."
        yield "# TYPE prismcache_upstream_gate_waiting gauge"
        yield f"prismcache_upstream_gate_waiting {len(self._waiters)}"


class LoadAdmission:
    """Admission under load (see the module docstring): an :data:`AdmissionHook` that, while
    the upstream is overloaded, refuses answers of categories reused less than ``min_reuse``
    hits per stored entry, and otherwise defers to ``then`` (the cache's own hook, or none).

    ``observe`` is fed the status of every upstream answer; the overload is remembered for
    ``memory`` seconds after the last overload status. Thread-safe.

    >>> admit = LoadAdmission(min_reuse=0.1, min_stores=10, memory=60.0)
    >>> seldom = CategoryStats(stores=50, hits=2)
    >>> admit(None, seldom) is None          # not overloaded: admitted
    True
    >>> admit.observe(429)
    >>> admit(None, seldom)
    'load:reuse 0.040 < 0.1'
    >>> admit(None, CategoryStats(stores=50, hits=20)) is None
    True
    """

    def __init__(self, *, min_reuse: float, min_stores: int, memory: float,
                 then: AdmissionHook | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0.0 <= min_reuse or min_stores < 1 or memory <= 0:
            raise ValueError("need min_reuse >= 0, min_stores >= 1 and memory > 0")
        self.min_reuse, self.min_stores, self.memory = min_reuse, min_stores, memory
        self.then = then
        self._clock = clock
        self._until = float("-inf")
        self._lock = threading.Lock()
        self.skipped: dict[str, int] = {}  # answers not admitted, per category

    @property
    def overloaded(self) -> bool:
        """Whether the upstream answered an overload status within the last ``memory`` s."""
        return self._clock() < self._until

    def observe(self, status: int) -> None:
        """Feed the status of one upstream answer (as the client would have got it)."""
        if status in OVERLOADED:
            self._until = self._clock() + self.memory

    def __call__(self, entry: Entry | None, stats: CategoryStats) -> str | None:
        """The reason not to admit ``entry`` of a category with counters ``stats``, or
        ``None`` to admit it (as far as load goes; then ``then`` decides)."""
        if (self.overloaded and stats.stores >= self.min_stores
                and stats.hits < self.min_reuse * stats.stores):
            category = "" if entry is None else entry.category
            with self._lock:
                self.skipped[category] = self.skipped.get(category, 0) + 1
            return f"load:reuse {stats.hits / stats.stores:.3f} < {self.min_reuse}"
        return None if self.then is None or entry is None else self.then(entry, stats)

    def metric_lines(self) -> Iterable[str]:
        """Prometheus lines: answers not admitted under load, per category, and the state."""
        yield ("# HELP prismcache_load_admission_skipped_total Upstream answers not admitted "
               "while the upstream was overloaded (their category's entries are seldom reused).")
        yield "# TYPE prismcache_load_admission_skipped_total counter"
        with self._lock:
            skipped = sorted(self.skipped.items())
        for category, n in skipped:
            yield f'prismcache_load_admission_skipped_total{{category="{category}"}} {n}'
        yield "# HELP prismcache_upstream_overloaded 1 while load admission sees an overload."
        yield "# TYPE prismcache_upstream_overloaded gauge"
        yield f"prismcache_upstream_overloaded {int(self.overloaded)}"
