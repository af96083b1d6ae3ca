"""CPU per ``cache.store(...)``, per document store, with an entry's JSON encoded once
(``after``: ``codec.sized``) or twice (``before``: the size from a full ``encode``, then the
store's own), in one run.

    .venv/bin/python bench/store_writes.py [--rounds 20] [--stores 100]

Per document store (memory, a SQLite file, a local ``redis-server`` on a free loopback port,
no persistence, stopped at the end), per response kind (``plain``: a 0.9 kB chat completion;
``streamed``: the same with 100 recorded stream chunks, 6.3 kB) and per variant, times the
process CPU of ``--stores`` calls of ``cache.store`` with distinct questions, ``--rounds``
times, the variants alternating batch by batch (so a shared machine's load drifts over both
alike). The embedder is the deterministic ``HashEmbedder`` (no model), so what
is timed is the cache's and the store's own work. ``before`` is the previous code, put back in
this process: ``_make_entry`` set ``entry.size = encode(entry).size``. Prints the medians over the
rounds and the saving per store. First, the codec's own part alone (no cache, no store):
µs per entry of making it storable, size first then the store's ``encode``, both ways.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchkit import free_port, serving

from prismcache import HashEmbedder, SemanticCache, writes
from prismcache.config import load_config
from prismcache.entry import Entry
from prismcache.stores import open_store
from prismcache.stores.codec import encode, sized

ANSWER = {"id": "chatcmpl-x", "object": "chat.completion", "created": 1700000000,
          "model": "gpt-4o-mini", "choices": [{"index": 0, "message": {
              "role": "assistant", "content": "To reset your password, open the portal, click "
              "'Forgot password', enter your e-mail and follow the link we send you. " * 4},
              "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 40, "completion_tokens": 120, "total_tokens": 160}}
CHUNKS = [{"choices": [{"delta": {"content": "word "}, "index": 0}]} for _ in range(100)]


def twice(entry: Entry) -> Entry:
    """The previous code: the size from a full encode, the encoding thrown away."""
    entry.size = encode(entry).size
    return entry


VARIANTS: dict[str, Callable[[Entry], Entry]] = {"before": twice, "after": sized}


def body(n: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"How do I reset my password, question {n}?"}]}


def cpu_per_store(cache: SemanticCache, start: int, count: int, chunks: bool) -> float:
    """Microseconds of process CPU per ``cache.store`` over ``count`` distinct questions."""
    bodies = [cache.prepare(body(n)) for n in range(start, start + count)]
    began = time.process_time()
    for prepared in bodies:
        cache.store(prepared, ANSWER, chunks=CHUNKS if chunks else None, category="faq")
    return (time.process_time() - began) / count * 1e6


def codec_alone(rounds: int, count: int = 1000) -> None:
    """Print µs per entry of sizing then encoding it, before and after, per kind (median of
    ``rounds`` interleaved timings of ``count`` entries)."""
    prepared = {
        kind: Entry(id=7, tenant="t", partition="p", category="faq", model="gpt-4o-mini",
                    exact_key="k", query="q", request=body(0), response=ANSWER,
                    chunks=CHUNKS if kind == "streamed" else None)
        for kind in ("plain", "streamed")}
    for kind, entry in prepared.items():
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            for variant, make in VARIANTS.items():
                began = time.process_time()
                for _ in range(count):
                    encode(make(entry))  # what _make_entry, then the store's put, do
                times[variant].append((time.process_time() - began) / count * 1e6)
        old, new = (statistics.median(times[v]) for v in ("before", "after"))
        print(f"codec alone, {kind:8}: before {old:6.1f} us  after {new:6.1f} us per entry  "
              f"saved {old - new:5.1f} us ({new / old:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--stores", type=int, default=100)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    codec_alone(args.rounds)
    config = {"embedder": "hash:384", "default_category": "faq",
              "capacity": {"entries": 1_000_000}, "categories": {"faq": {"ttl": "1h"}}}
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, serving(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], port):
        caches = {
            "memory": SemanticCache.open(load_config(config), store=open_store("memory://"),
                                         embedder=HashEmbedder(dim=384)),
            "sqlite": SemanticCache.open(load_config(config), embedder=HashEmbedder(dim=384),
                                         store=open_store(f"sqlite:///{Path(tmp) / 'c.db'}")),
            "redis": SemanticCache.open(load_config(config), embedder=HashEmbedder(dim=384),
                                        store=open_store(f"redis://127.0.0.1:{port}/0"))}
        figures: dict[tuple[str, str, str], list[float]] = {}
        start = 0
        for _ in range(args.rounds):
            for kind in ("plain", "streamed"):
                for name, cache in caches.items():
                    for variant, make in VARIANTS.items():
                        writes.sized = make  # type: ignore[attr-defined]
                        cpu = cpu_per_store(cache, start, args.stores, kind == "streamed")
                        start += args.stores
                        figures.setdefault((kind, name, variant), []).append(cpu)
            writes.sized = sized  # type: ignore[attr-defined]
        for kind in ("plain", "streamed"):
            for name in caches:
                old = statistics.median(figures[(kind, name, "before")])
                new = statistics.median(figures[(kind, name, "after")])
                print(f"median {kind:8} {name:6}: before {old:6.0f} us  after {new:6.0f} us  "
                      f"saved {old - new:5.0f} us ({new / old:.2f}x)")
        for cache in caches.values():
            cache.close()


if __name__ == "__main__":
    main()
