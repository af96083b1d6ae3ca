"""Request coalescing: identical in-flight requests share one upstream call.

The first request for a key starts a :class:`Flight`, a task of its own that calls the
upstream and publishes what it gets: first a :class:`Head` (status and headers) or the
:class:`~prismcache.errors.UpstreamError` that prevented one, then the body in pieces (one for
a JSON answer, one per event for a stream). Every request for the same key, the first included,
subscribes and reads the same head and pieces from the start, so a follower that joins
mid-stream still gets the whole stream.

**Semantic coalescing.** A missed request that is not identical to one in flight may still
follow it: when its lookup embedded the query (:attr:`~prismcache.results.Miss.vector`), it
joins a flight of the same *group* (endpoint, partition, conversation context, category,
stream and store flags) when :func:`prismcache.decision.decide` would serve the flight's answer
for it: the in-flight queries nearest to it are the candidates, under the category's policy
and verifier, exactly the decision a hit on that flight's answer would take once it is stored.
A verifier that fails makes the request call the upstream itself (fail closed: it never
follows on a verdict it did not get). Such a
follower's answer is marked ``X-Prism-Cache: coalesced`` with its similarity. Its wait is
bounded by the flight's own upstream call (the proxy's upstream timeout), which started
earlier than the call the follower would have made.

A flight runs apart from its first client, so one client hanging up does not break the
answer for the others; when the *last* subscriber leaves before the end, the flight is
cancelled: the upstream call is aborted and nothing is stored.

**Until its answer is stored.** A finished flight whose answer is being stored
(:attr:`Flight.settled`, set by the runner) stays joinable until the store has landed: a
request whose lookup ran before the entry existed (on a busy proxy, lookups and stores wait in
one thread pool, seconds apart) follows the finished flight, identical or similar, instead of
calling the upstream again for an answer the cache is about to hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from prismcache.config import CategoryPolicy
from prismcache.decision import Candidate, Query, decide
from prismcache.errors import UpstreamError, VerifierError
from prismcache.request import RequestKey
from prismcache.results import Hit, Miss

if TYPE_CHECKING:
    from prismcache.verifiers import Verifier

__all__ = ["Coalescer", "Flight", "Head", "Similar", "similar_for"]

log = logging.getLogger("prismcache.server")


@dataclass(frozen=True, slots=True)
class Head:
    """The status line of a flight's answer."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    streaming: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Similar:
    """What semantic coalescing needs of a missed request: the group of flights it may join
    (endpoint, partition, conversation context, category, stream and store flags: never across
    partitions), its query and embedding, and its category's policy and verifier."""

    group: Hashable
    query: str
    vector: np.ndarray
    policy: CategoryPolicy
    verifier: Verifier | None = None
    neighbours: int = 4  #: in-flight queries the decision looks at (the nearest)

    def choose(self, leaders: Sequence[Similar]) -> tuple[int, float] | None:
        """The index in ``leaders`` of the one whose answer :func:`~prismcache.decision.decide`
        would serve for this query, and its cosine; ``None`` when none would (or the verifier
        failed)."""
        if not leaders:
            return None
        # one matrix product: a dot product per leader costs ~4x as much on the event loop
        scores = np.array([other.vector for other in leaders]) @ self.vector
        nearest = np.argsort(-scores, kind="stable")[:self.neighbours]
        candidates = [Candidate(entry_id=int(i), text=leaders[i].query,
                                similarity=float(scores[i]), vector=leaders[i].vector)
                      for i in nearest]
        try:
            verdict = decide(Query(text=self.query, vector=self.vector), candidates,
                             self.policy, self.verifier)
        except VerifierError as exc:
            log.warning("prismcache: semantic coalescing skipped, verifier failed: %s", exc)
            return None
        if verdict.served is None:
            return None
        return verdict.served, float(scores[verdict.served])


class Flight:
    """One upstream call and everything it has published so far."""

    def __init__(self) -> None:
        self.key: Hashable | None = None
        self.similar: Similar | None = None  # the leader's, when semantic followers may join
        self.head: Head | None = None
        self.error: UpstreamError | None = None
        self.done = False
        self.subscribers = 0
        self.upstream_seconds = 0.0  # set by the runner: time spent waiting on the upstream
        #: set by the runner once the answer is being stored: waits (a bounded while) for that
        #: store, ``True`` once it has landed; the flight stays joinable until then
        self.settled: Callable[[], Awaitable[bool]] | None = None
        self.task: asyncio.Task[None] | None = None
        self._pieces: list[bytes] = []
        self._head_ready = asyncio.Event()
        self._changed = asyncio.Event()

    # -- publishing (the runner) -------------------------------------------------------------

    def set_head(self, head: Head) -> None:
        """Publish the status line; readers of :meth:`wait_head` wake up."""
        self.head = head
        self._head_ready.set()

    def publish(self, piece: bytes) -> None:
        """Append one body piece."""
        self._pieces.append(piece)
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        """No head could be had: every subscriber answers with ``error``."""
        if self.head is None:
            self.error = error
            self._head_ready.set()

    def finish(self) -> None:
        """No more pieces will come."""
        self.done = True
        self._head_ready.set()
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # -- reading (the subscribers) -----------------------------------------------------------

    async def wait_head(self) -> Head | UpstreamError:
        """The head, or the error that prevented it."""
        await self._head_ready.wait()
        if self.head is not None:
            return self.head
        return self.error or UpstreamError("the upstream call was abandoned", status=502)

    async def pieces(self) -> AsyncIterator[bytes]:
        """Every body piece from the first, waiting for more until the flight is done."""
        i = 0
        while True:
            if i < len(self._pieces):
                yield self._pieces[i]
                i += 1
            elif self.done:
                return
            else:
                await self._changed.wait()

    async def body(self) -> bytes:
        """The whole body, once the flight is done."""
        return b"".join([piece async for piece in self.pieces()])


Runner = Callable[[Flight], Awaitable[None]]


class Gate(Protocol):
    """What the coalescer needs of an upstream gate (:class:`~prismcache.server.overload.
    UpstreamGate`): a slot per upstream call, and the status each call ended with."""

    async def acquire(self) -> bool:
        """``True`` with a slot, ``False`` when sent anyway after the longest wait; may raise
        an :class:`~prismcache.errors.UpstreamError` instead (shed: no slot, no call)."""

    def release(self) -> None: ...

    def observe(self, status: int, *, late: bool = False) -> None: ...

    @property
    def saturated(self) -> bool: ...


def similar_for(result: Hit | Miss | None, key: RequestKey, policy: CategoryPolicy,
                flags: tuple[Hashable, ...], verifier: Verifier | None = None,
                neighbours: int = 4) -> Similar | None:
    """The :class:`Similar` of a missed request whose lookup embedded its query (else
    ``None``): grouped by ``flags`` (endpoint, stream, store), partition, conversation
    context (exactly) and category; decided under ``policy`` with ``verifier`` (the one the
    cache uses for the category) over the ``neighbours`` nearest flights."""
    if not isinstance(result, Miss) or result.vector is None or result.category is None:
        return None
    if policy.exact_only:
        return None
    # The earlier turns of a conversation are not in the partition: followers need the same
    # turns exactly (their meaning is compared only at lookup, against stored entries).
    context = key.context.key if key.context is not None else None
    return Similar(group=(*flags, key.partition, context, result.category), query=key.query,
                   vector=result.vector, policy=policy, verifier=verifier,
                   neighbours=neighbours)


class Coalescer:
    """In-flight requests by key. Used from the event loop only (no locking needed)."""

    def __init__(self, gate: Gate | None = None) -> None:
        self.gate = gate  # limits upstream calls in flight (prismcache.server.overload)
        self._flights: dict[Hashable, Flight] = {}
        self._groups: dict[Hashable, list[Flight]] = {}  # flights semantic followers may join
        self.followers = 0  # requests that joined someone else's flight
        self.semantic_followers = 0  # ... of them, those that joined a similar request's
        self._lingering: set[asyncio.Task[None]] = set()  # finished flights being stored

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: Hashable | None, runner: Runner,
             similar: Similar | None = None) -> tuple[Flight, bool]:
        """Subscribe to the flight for ``key``, or else (given ``similar``) to the most similar
        flight of its group that passes :meth:`Similar.similarity`, starting one with
        ``runner`` if there is none (``key=None``: never shared). Returns the flight and
        whether this call started it. Every ``join`` must be paired with a :meth:`leave`."""
        flight, semantic = self._find(key, similar)
        self.semantic_followers += semantic
        if flight is not None:
            flight.subscribers += 1
            self.followers += 1
            return flight, False
        flight = Flight()
        flight.subscribers, flight.key = 1, key
        if key is not None:
            self._flights[key] = flight
            if similar is not None:
                flight.similar = similar
                self._groups.setdefault(similar.group, []).append(flight)
        flight.task = asyncio.create_task(self._run(key, flight, runner))
        return flight, True

    def find(self, key: Hashable | None, similar: Similar | None = None) -> Flight | None:
        """The flight :meth:`join` would subscribe a request with ``key`` and ``similar`` to,
        or ``None`` when it would start one (a new upstream call). Changes nothing."""
        return self._find(key, similar)[0]

    def _find(self, key: Hashable | None, similar: Similar | None) -> tuple[Flight | None, bool]:
        flight = self._flights.get(key) if key is not None else None
        if flight is None and similar is not None:
            flight = self._most_similar(similar)
            return flight, flight is not None
        return flight, False

    @staticmethod
    def similarity(flight: Flight, key: Hashable | None,
                   similar: Similar | None) -> float | None:
        """The similarity of a follower (its ``key`` and ``similar``) to ``flight``'s leader
        when it joined by similarity rather than as an identical request; else ``None``."""
        if similar is None or flight.similar is None or flight.key == key:
            return None
        return float(np.dot(similar.vector, flight.similar.vector))

    def _most_similar(self, similar: Similar) -> Flight | None:
        flights = [f for f in self._groups.get(similar.group, ()) if f.similar is not None]
        chosen = similar.choose([f.similar for f in flights])  # type: ignore[misc]
        return None if chosen is None else flights[chosen[0]]

    def leave(self, flight: Flight) -> None:
        """Unsubscribe; the last subscriber to leave an unfinished flight cancels it."""
        flight.subscribers -= 1
        if flight.subscribers <= 0 and not flight.done and flight.task is not None:
            flight.task.cancel()

    @staticmethod
    async def _gated(gate: Gate, flight: Flight, runner: Runner) -> None:
        late = not await gate.acquire()  # a shed call raises: every subscriber gets its 429
        status = 0
        try:
            await runner(flight)
            status = flight.head.status if flight.head is not None else 0
        except UpstreamError as exc:
            status = exc.status or 502
            raise
        finally:
            gate.observe(status, late=late)
            gate.release()

    async def _run(self, key: Hashable | None, flight: Flight, runner: Runner) -> None:
        try:
            if self.gate is None:
                await runner(flight)
            else:  # queued flights take followers too: they are registered already
                await self._gated(self.gate, flight, runner)
        except UpstreamError as exc:
            flight.fail(exc)
        except Exception:  # a bug in the proxy: answer 500, never leave subscribers hanging
            log.exception("upstream call failed unexpectedly")
            flight.fail(UpstreamError("the proxy failed to forward the request", status=500))
        finally:
            flight.finish()
            if flight.settled is None or key is None:
                self._forget(key, flight)
            else:  # joinable until its answer is stored (see the module docstring)
                task = asyncio.ensure_future(self._linger(key, flight, flight.settled))
                self._lingering.add(task)
                task.add_done_callback(self._lingering.discard)

    async def _linger(self, key: Hashable, flight: Flight,
                      settled: Callable[[], Awaitable[bool]]) -> None:
        try:
            while not await settled():
                pass
        finally:
            self._forget(key, flight)

    def _forget(self, key: Hashable | None, flight: Flight) -> None:
        if key is not None and self._flights.get(key) is flight:
            del self._flights[key]
        if flight.similar is not None:
            group = self._groups.get(flight.similar.group, [])
            if flight in group:
                group.remove(flight)
            if not group:
                self._groups.pop(flight.similar.group, None)
