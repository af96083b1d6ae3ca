"""Helper of bench/lookup.py: opens a cache in a fresh process for the memory probe."""

from __future__ import annotations

import os

from prismcache import SemanticCache, load_config
from prismcache.embedders import Embedder, open_embedder


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def warm_embedder() -> Embedder:
    """The bundled embedder, loaded and run once (so its memory is counted before)."""
    embedder = open_embedder("minilm")
    embedder.embed(["warm up"])
    return embedder


def open_cache(url: str, snapshot: str, embedder: Embedder) -> SemanticCache:
    """Open the benchmark's cache from its snapshot."""
    return SemanticCache.open(load_config({"store": url, "snapshot": snapshot, "rules": []}),
                              embedder=embedder)
