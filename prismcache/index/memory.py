"""Giving freed index memory back to the system (glibc).

An index dropped to stay within ``index.max_bytes`` frees its memory, but glibc's malloc may
keep it: its threshold for serving a large block from its own ``mmap`` rises each time such a
block is freed (up to 32 MiB), after which partition-sized blocks come from the heap, whose
freed space the process keeps. Measured with ``bench/capacity.py --parts burst-hnsw``: RSS
1.9-2.7x the budget with the dynamic threshold, 1.0-1.1x with it fixed at 128 KiB.

:func:`fix_mmap_threshold` fixes it (``mallopt(M_MMAP_THRESHOLD, ...)``, which also stops the
dynamic rise). It is process-wide, so prismcache calls it only when an index budget is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 128 * 1024  #: blocks this large or larger get their own mapping
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_done = False


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve blocks of ``threshold`` bytes or more from their own memory mapping, so that a
    freed index returns its memory at once. Returns whether it took effect: ``False`` where
    the C library has no ``mallopt`` (not glibc: macOS, musl) or refuses the value. Once it
    took effect, later calls do nothing and return ``True``."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    if not _done:
        log.warning("prismcache: mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return _done
