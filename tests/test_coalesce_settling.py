"""A finished flight stays joinable until its answer is stored (real proxy, fake upstream).

On a busy proxy lookups and stores wait in one thread pool: a request whose lookup started
before its identical (or similar) predecessor's answer was stored can end it after that
flight is over and before the entry lands. It must follow the finished flight, not call the
upstream a second time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fake_upstream import FakeUpstream
from prismcache.entry import Entry
from prismcache.stores.memory import MemoryStore
from proxy_support import make_proxy, upstream, user  # noqa: F401 - fixtures

ASKED = "how do I reset my password"


class SlowStore(MemoryStore):
    """A memory store whose writes take ``delay`` seconds (a store behind a busy pool)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def put(self, entry: Entry) -> None:
        time.sleep(self.delay)
        super().put(entry)


def _serialised(embed: Any, seconds: float) -> Any:
    """``embed`` one call at a time, each taking ``seconds`` (one model on a busy machine)."""
    lock = threading.Lock()

    def slow(texts: Sequence[str]) -> np.ndarray:
        with lock:
            time.sleep(seconds)
            return embed(texts)

    return slow


def _post_both(proxy: Any, second: str) -> list[Any]:
    replies: list[Any] = [None, None]
    ready = threading.Barrier(2)

    def send(i: int, query: str) -> None:
        with proxy.http() as http:
            ready.wait()
            time.sleep(0.15 * i)  # the second arrives while the first is being looked up
            replies[i] = http.post("/v1/chat/completions",
                                   json={"model": "m1", "messages": user(query)})

    threads = [threading.Thread(target=send, args=(i, q)) for i, q in enumerate((ASKED, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def test_a_lookup_that_ends_before_the_store_lands_follows_the_finished_flight(
        make_proxy, upstream: FakeUpstream) -> None:
    # lookup 1: 0-0.4 s; its call 0.4-0.7 s; its store lands ~1.7 s; lookup 2 (queued behind
    # lookup 1 on the one model): 0.4-0.8 s, a miss after the flight ended
    proxy = make_proxy(store=SlowStore(delay=1.0))
    proxy.embedder.embed = _serialised(proxy.embedder.embed, 0.4)  # type: ignore[method-assign]
    upstream.behaviour.latency = 0.3
    first, second = _post_both(proxy, ASKED)
    assert upstream.generations == 1
    assert first.headers["x-prism-cache"] == "miss"
    assert second.headers["x-prism-cache"] == "coalesced"
    assert second.headers["x-prism-similarity"] == "1.0000"  # identical
    assert first.json()["choices"][0]["message"]["content"] == \
        second.json()["choices"][0]["message"]["content"]
    proxy.settle()
    assert proxy.entries() == 1
    with proxy.http() as http:  # stored now: the flight is gone, a repeat hits
        assert http.post("/v1/chat/completions", json={"model": "m1", "messages": user(ASKED)}
                         ).headers["x-prism-cache"] == "hit"
        assert 'prismcache_coalesced_total{endpoint="chat"} 1' in http.get("/metrics").text


def test_a_refused_flight_is_not_kept_for_followers(make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(store=SlowStore(delay=1.0))
    proxy.embedder.embed = _serialised(proxy.embedder.embed, 0.4)  # type: ignore[method-assign]
    upstream.behaviour.latency = 0.3
    upstream.behaviour.status = 429  # nothing to store: the second request tries again
    first, second = _post_both(proxy, ASKED)
    assert upstream.calls["chat"] == 2
    assert first.status_code == second.status_code == 429
    assert second.headers["x-prism-cache"] == "miss"
