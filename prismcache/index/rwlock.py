"""A writer-preferring readers-writer lock.

hnswlib's ``add_items`` must not run beside ``knn_query``, and ``resize_index`` beside neither,
while any number of ``knn_query`` calls may run together. A single mutex would serialise the
searches and starve them during a burst of writes; this lock lets searches share and makes a
waiting writer block *new* readers, so a steady stream of searches cannot starve the writer.

    >>> lock = RWLock()
    >>> with lock.read():
    ...     pass
    >>> with lock.write():
    ...     pass

The lock is not reentrant: a thread holding it must not take it again (a reader that asks for
a read while a writer waits would deadlock against that writer).
"""

from __future__ import annotations

import threading
from types import TracebackType

__all__ = ["RWLock"]


class RWLock:
    """Many readers or one writer; a waiting writer goes before readers that arrive after it."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._read_guard = _ReadGuard(self)
        self._write_guard = _WriteGuard(self)

    def read(self) -> _ReadGuard:
        """A context manager holding the lock shared for the ``with`` block."""
        return self._read_guard

    def write(self) -> _WriteGuard:
        """A context manager holding the lock exclusively for the ``with`` block."""
        return self._write_guard

    def _acquire_read(self) -> None:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def _acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True

    def _release_write(self) -> None:
        with self._cond:
            self._writing = False
            self._cond.notify_all()


class _ReadGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._acquire_read()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock._release_read()


class _WriteGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._acquire_write()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock._release_write()
