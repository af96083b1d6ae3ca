"""``prismcache serve`` sets its process's garbage collector for serving (``settle_gc``): what
is allocated before the first request leaves the collector's generations, and young
collections are rarer. Checked in this process, then put back."""

from __future__ import annotations

import gc

from prismcache.server.cli import GC_YOUNG_THRESHOLD, settle_gc


def test_settle_gc_freezes_what_exists_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        # still a collector: a cycle made after the freeze is collected
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
