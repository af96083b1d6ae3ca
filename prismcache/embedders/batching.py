"""Coalescing concurrent ``embed`` calls from several threads into one model call.

The proxy embeds each request on a worker thread. With the bundled model, one call per request
pays the model's per-call cost each time, and concurrent calls compete for the same cores.
:class:`BatchingEmbedder` wraps any embedder so that calls which arrive together share one call
of the wrapped embedder:

* a caller that finds fewer than ``concurrency`` batches running runs its texts at once,
  **without waiting**, unless others are already queued;
* callers that arrive while ``concurrency`` batches run queue up; when one ends, the first of
  them leads the next batch with everything queued (up to ``max_batch`` texts), waiting at
  most ``max_wait`` seconds for more callers while the batch is not full;
* every caller gets exactly the rows of its own texts, in its own order;
* when the wrapped call fails, every caller in that batch gets an
  :class:`~prismcache.errors.EmbeddingError` (the cache then fails open for each, counted).

>>> from prismcache.embedders import open_embedder
>>> embedder = BatchingEmbedder(open_embedder("hash:32"))
>>> embedder.id, embedder.embed(["hello", "world"]).shape
('hash-v1:32', (2, 32))
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from prismcache.embedders import _check_texts
from prismcache.embedders.base import Embedder
from prismcache.errors import EmbeddingError

__all__ = ["BatchingEmbedder"]


class _Call:
    """One caller's texts, the condition its thread sleeps on (over the embedder's lock) and,
    once its batch ran, its rows or the batch's error."""

    __slots__ = ("error", "texts", "vectors", "wake")

    def __init__(self, texts: list[str], wake: threading.Condition) -> None:
        self.texts = texts
        self.wake = wake
        self.vectors: np.ndarray | None = None
        self.error: Exception | None = None

    @property
    def done(self) -> bool:
        return self.vectors is not None or self.error is not None


class BatchingEmbedder:
    """An :class:`~prismcache.embedders.base.Embedder` that batches concurrent callers.

    Args:
        inner: the embedder that does the work; its ``name``, ``dim`` and ``id`` are this
            one's, so vectors stored through either are interchangeable.
        max_wait: seconds a batch's leader waits for more callers when others are queued and
            the batch is not full (0: never wait). Never waited when a caller is alone.
        max_batch: texts per call of ``inner`` (a single caller's larger input still goes in
            one call: ``inner`` chunks it itself).
        concurrency: calls of ``inner`` that may run at once (the server gives one per core
            and worker process: with one-thread model calls, that keeps every core busy).

    Thread-safe (``inner`` must be too when ``concurrency`` > 1).
    Counters: :attr:`calls` (callers served), :attr:`batches` (calls of ``inner``),
    :attr:`failures` (failed batches), :attr:`largest` (most callers in one batch),
    :attr:`texts` (texts embedded), :attr:`seconds` (wall time inside ``inner``),
    :attr:`cpu_seconds` (the calling threads' CPU time inside it: a one-thread model's own
    cost), :attr:`sizes` (batches by texts per call, in powers of two); :meth:`stats` reads them
    together. :meth:`backlog` estimates the wait of a caller arriving now.
    """

    def __init__(self, inner: Embedder, *, max_wait: float = 0.0005,
                 max_batch: int = 32, concurrency: int = 1) -> None:
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency!r}")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.calls = self.batches = self.failures = self.largest = self.texts = 0
        self.seconds = self.cpu_seconds = 0.0
        self.sizes: dict[int, int] = {}  # batches by texts per call, rounded up to 2**n
        self._lock = threading.Lock()
        self._local = threading.local()  # each thread's condition over the lock, reused
        self._queue: deque[_Call] = deque()
        self._queued = 0  # texts in the queue
        self._running = 0
        self._waiting = 0  # texts queued or in a running batch
        self._per_text = 0.0  # recent seconds of model work per text (moving average)

    @property
    def id(self) -> str:
        """The wrapped embedder's id."""
        return self.inner.id

    def __repr__(self) -> str:
        return (f"BatchingEmbedder({self.inner!r}, max_wait={self.max_wait}, "
                f"max_batch={self.max_batch}, concurrency={self.concurrency})")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``, in one call of the wrapped embedder shared with whichever other
        threads call at the same time. Same contract as the wrapped ``embed``; a failure of
        the shared call raises :class:`EmbeddingError` in every caller of that batch."""
        call = _Call(_check_texts(texts), self._wakeup())
        if not call.texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            self._queue.append(call)
            self._waiting += len(call.texts)
            self._queued += len(call.texts)
            if self._queued >= self.max_batch and self._queue[0] is not call:
                self._queue[0].wake.notify()  # a leader gathering a batch: it is full now
            while not call.done:
                if self._running >= self.concurrency or not self._queue \
                        or self._queue[0] is not call:
                    call.wake.wait()  # not our turn to lead, or ours is running
                    continue
                self._running += 1  # lead the next batch, which starts with our call
                batch: list[_Call] = []
                try:
                    batch = self._gather()
                    self._next_leader()  # a free slot and callers left: the next head leads
                    self._lock.release()
                    started, cpu = time.perf_counter(), time.thread_time()
                    try:
                        failed = self._run(batch)
                    finally:
                        seconds = time.perf_counter() - started
                        cpu = time.thread_time() - cpu
                        self._lock.acquire()
                    self._count(batch, failed, seconds, cpu)  # under the lock
                finally:
                    self._running -= 1
                    for other in batch:  # wake exactly the callers served, not every waiter
                        if other is not call:
                            other.wake.notify()
                    self._next_leader()
        if call.error is not None:  # a new exception per caller: they raise it concurrently
            raise EmbeddingError(str(call.error)) from call.error
        assert call.vectors is not None
        return call.vectors

    def backlog(self) -> float:
        """Seconds a caller arriving now would wait for the model work ahead of it: texts
        queued or being embedded x recent seconds per text / ``concurrency``; 0.0 while a
        batch could start at once (so a caller alone never waits). An estimate read without
        the lock: cheap enough to ask on every request."""
        if self._running < self.concurrency and not self._queue:
            return 0.0
        return self._waiting * self._per_text / self.concurrency

    def stats(self) -> dict[str, object]:
        """The counters as one JSON-ready dict: callers, batches, failures, texts, the mean
        texts per batch, the most callers in one batch, the mean wall and CPU milliseconds of
        model work per text (CPU: the calling thread's, all of a one-thread model's), and
        ``sizes``: batches by texts per call, each rounded up to a power of two."""
        with self._lock:
            batches, texts = self.batches, self.texts
            return {"calls": self.calls, "batches": batches, "failures": self.failures,
                    "texts": texts, "mean_batch": round(texts / batches, 2) if batches else 0.0,
                    "largest": self.largest,
                    "ms_per_text": round(self.seconds / texts * 1000, 3) if texts else 0.0,
                    "cpu_ms_per_text": round(self.cpu_seconds / texts * 1000, 3)
                    if texts else 0.0,
                    "sizes": {str(size): n for size, n in sorted(self.sizes.items())}}

    def _wakeup(self) -> threading.Condition:
        """The calling thread's condition over the lock (made once per thread): a caller is
        woken alone, when its rows are ready or its turn to lead has come."""
        wake: threading.Condition | None = getattr(self._local, "wake", None)
        if wake is None:
            wake = self._local.wake = threading.Condition(self._lock)
        return wake

    def _next_leader(self) -> None:
        """Wake the caller at the head of the queue when a batch may start (the lock is
        held): only the head leads, so one wake-up per free slot, never every waiter."""
        if self._queue and self._running < self.concurrency:
            self._queue[0].wake.notify()

    def _gather(self) -> list[_Call]:
        """Take the next batch off the queue, starting with its head, the caller leading it
        (the lock is held). When others are queued and the batch is not full, wait up to
        ``max_wait`` for more (the lock is released while waiting; the head stays first:
        only the head leads)."""
        leader = self._queue[0]
        if len(self._queue) > 1 and self.max_wait > 0:
            deadline = time.monotonic() + self.max_wait
            while self._queued < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                leader.wake.wait(left)
        batch: list[_Call] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
            call = self._queue.popleft()
            batch.append(call)
            size += len(call.texts)
        self._queued -= size
        return batch

    def _count(self, batch: list[_Call], failed: bool, seconds: float, cpu: float) -> None:
        """Count a batch that ran for ``seconds`` (``cpu``: its thread's CPU time) and fold
        its time per text into the moving average :meth:`backlog` uses."""
        texts = sum(len(call.texts) for call in batch)
        sample = seconds / texts
        self._per_text = sample if not self._per_text else 0.8 * self._per_text + 0.2 * sample
        self._waiting -= texts
        self.calls += len(batch)
        self.batches += 1
        self.failures += failed
        self.largest = max(self.largest, len(batch))
        self.texts += texts
        self.seconds += seconds
        self.cpu_seconds += cpu
        bucket = 1 << (texts - 1).bit_length()
        self.sizes[bucket] = self.sizes.get(bucket, 0) + 1

    def _run(self, batch: list[_Call]) -> bool:
        """Embed the batch's texts in one call and hand each caller its rows (or the error);
        return whether it failed."""
        texts = [text for call in batch for text in call.texts]
        try:
            vectors = self.inner.embed(texts)
            if vectors.shape != (len(texts), self.dim):
                raise EmbeddingError(f"{self.inner!r} returned shape {vectors.shape}, "
                                     f"expected {(len(texts), self.dim)}")
        except Exception as exc:  # noqa: BLE001 - every caller must hear of it, whatever it was
            for call in batch:
                call.error = exc
            return True
        start = 0
        for call in batch:
            call.vectors = vectors[start:start + len(call.texts)]
            start += len(call.texts)
        return False
