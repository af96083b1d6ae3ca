"""The hits :class:`~prismcache.stores.redis.RedisStore` has recorded but not yet sent.

A hit over Redis reads the entry, then records the hit (``touch``: hits + 1, last access,
priority, the entry's place in its category's eviction order). The priority comes from the
entry just read, so the two cannot be one command; sent as they happen they cost two round
trips per hit. Instead a touch waits here and rides in the store's next command: the next
``get`` of the same bucket carries it in its script (one round trip per hit), any other command
on entries sends what waits first, and a timer sends what has waited ``delay`` seconds (10 ms by default),
so another process sees a hit at most that late. While hits keep coming each read carries the
touches before it and the timer finds nothing old enough to send.

Touches that cannot be sent (Redis went away) are dropped: counted in
:attr:`PendingTouches.lost` and logged. A dropped touch loses only a hit count and a place in
the eviction order, never an answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["PendingTouches"]

log = logging.getLogger("prismcache.stores.redis")

ARGS_PER_TOUCH = 4  # id, now, priority, eviction member: one touch's arguments to the scripts
# The sender thread looks every `delay` while hits come; after this many looks finding nothing
# it sleeps until the next touch (a thread per store, started by the first touch; one
# long-lived thread, not a timer per touch: starting threads showed in the hits' p99).
_IDLE_LOOKS = 100


class PendingTouches:
    """Touches waiting per bucket namespace, as flat script arguments; thread-safe.

    ``send(space, args)`` sends the touches ``args`` of bucket ``space`` (raising
    ``StoreError`` when it cannot); it is called by :meth:`flush`, from the sender thread too.
    """

    def __init__(self, send: Callable[[str, list[str]], object], *, delay: float = 0.01,
                 shown: str = "redis") -> None:
        self._send = send
        self._delay = delay
        self._shown = shown
        self._lock = threading.Condition(threading.Lock())
        self._waiting: dict[str, list[str]] = {}
        self._sender: threading.Thread | None = None
        self._asleep = False  # the sender waits for a touch (else it looks every `delay`)
        self._since: float | None = None  # monotonic time the oldest waiting touch came
        self._lost = 0
        self._closed = False

    @property
    def lost(self) -> int:
        """Touches dropped because they could not be sent."""
        return self._lost

    def __len__(self) -> int:
        with self._lock:
            return sum(len(a) for a in self._waiting.values()) // ARGS_PER_TOUCH

    def add(self, space: str, args: list[str]) -> None:
        """Keep one touch's four arguments for bucket ``space``; wake the sender if asleep."""
        with self._lock:
            if not self._waiting:
                self._since = time.monotonic()
                if self._asleep:
                    self._lock.notify()
            self._waiting.setdefault(space, []).extend(args)
            if self._sender is None and not self._closed:
                self._sender = threading.Thread(target=self._send_when_due, daemon=True,
                                                name=f"prismcache-touches {self._shown}")
                self._sender.start()

    def take(self, space: str) -> list[str]:
        """Remove and return the waiting touches of ``space`` (flat, oldest first), for a
        read to carry."""
        with self._lock:
            taken = self._waiting.pop(space, [])
            if not self._waiting:
                self._since = None
            return taken

    def dropped(self, args: list[str], error: Exception) -> None:
        """Count and log the touches ``args`` (flat) as lost to ``error``."""
        count = len(args) // ARGS_PER_TOUCH
        if not count:
            return
        with self._lock:
            self._lost += count
        log.warning("Redis store %s: %d hit(s) not recorded (%s: %s)", self._shown, count,
                    type(error).__name__, error)

    def flush(self) -> None:
        """Send every waiting touch now; raises the first ``StoreError`` (the touches that
        failed are counted as lost and logged first)."""
        failure = self._send_waiting()
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Stop the sender and send what waits; what cannot be sent is counted and logged."""
        with self._lock:
            sender, self._closed = self._sender, True
            self._lock.notify_all()
        if sender is not None:
            sender.join(timeout=5.0)
        self._send_waiting()

    def _send_when_due(self) -> None:
        """The sender thread: send what has waited ``delay``, until :meth:`close`."""
        idle = 0
        while True:
            with self._lock:
                if self._closed:
                    return  # close() sends what waits
                if self._since is None:  # reads carried everything
                    idle += 1
                    self._asleep = idle > _IDLE_LOOKS
                    self._lock.wait(None if self._asleep else self._delay)
                    self._asleep = False
                    continue
                idle = 0
                left = self._since + self._delay - time.monotonic()
                if left > 0:  # what waits came after the last read: wait for its own turn
                    self._lock.wait(left)
                    continue
            self._send_waiting()  # a failure is counted and logged there

    def _send_waiting(self) -> Exception | None:
        """Send what waits, per bucket; the first failure (each counted and logged)."""
        if not self._waiting:  # the common case, without the lock: a touch added meanwhile
            return None        # is the sender's to send
        with self._lock:
            waiting, self._waiting, self._since = self._waiting, {}, None
        failure: Exception | None = None
        for space, args in waiting.items():
            if not args:
                continue
            try:
                self._send(space, args)
            except Exception as exc:  # noqa: BLE001 - counted, logged, returned
                self.dropped(args, exc)
                failure = failure or exc
        return failure
