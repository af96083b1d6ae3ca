"""Stores after replies whose queries the lookup did not embed are embedded together
(``EmbedAhead``, ``SemanticCache.embed_ahead``): one model call for a batch, each store finds
its own vector, a failed batch leaves each store to embed (and fail open) by itself, and an
identical request after the reply still hits without waiting for the batch."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from conftest import chat

from prismcache.embedders import HashEmbedder
from prismcache.server.background import EmbedAhead
from proxy_support import Proxy, make_proxy, upstream, user  # noqa: F401 - fixtures

ANSWER = {"choices": [{"message": {"role": "assistant", "content": "an answer"},
                       "finish_reason": "stop"}]}


def test_embed_ahead_embeds_the_missing_queries_in_one_call(make_cache: Any) -> None:
    cache = make_cache({"default_category": "loose"})
    embedder = cache.embedder
    queries = [cache.prepare(chat(f"question {i} about topic {i * 3}")).key.query
               for i in range(5)]
    before = embedder.calls
    assert cache.embed_ahead(queries + queries[:2]) == 5  # duplicates embedded once
    assert embedder.calls == before + 1
    assert cache.embed_ahead(queries) == 0  # all known now: no call
    for i in range(5):  # each store finds its own vector: no further model call
        stored = cache.store(chat(f"question {i} about topic {i * 3}"), ANSWER)
        assert stored.stored
    assert embedder.calls == before + 1
    alone = HashEmbedder(dim=embedder.dim)
    for query in queries:
        assert np.array_equal(cache._embed(query), alone.embed([query])[0])


def test_embed_ahead_fails_without_memoizing(make_cache: Any) -> None:
    cache = make_cache({"default_category": "loose"})
    cache.embedder.fail = True
    with pytest.raises(Exception, match="embedder is down"):
        cache.embed_ahead(["a question never embedded"])
    assert "a question never embedded" not in cache._memo


def _ahead(max_wait: float, max_batch: int, fail: bool = False
           ) -> tuple[EmbedAhead, list[list[str]]]:
    batches: list[list[str]] = []

    async def embed(queries: list[str]) -> None:
        batches.append(list(queries))
        if fail:
            raise RuntimeError("the model fell over (test)")

    return EmbedAhead(embed, max_wait=max_wait, max_batch=max_batch), batches


def test_queries_arriving_within_the_wait_share_one_batch() -> None:
    async def main() -> None:
        ahead, batches = _ahead(0.05, 32)
        started = time.monotonic()
        await asyncio.gather(*(ahead.ready(f"q{i}") for i in range(5)))
        assert batches == [[f"q{i}" for i in range(5)]]
        assert time.monotonic() - started >= 0.04  # they waited for company
        assert (ahead.batches, ahead.texts, ahead.failures) == (1, 5, 0)

    asyncio.run(main())


def test_a_full_batch_and_hurry_send_at_once() -> None:
    async def main() -> None:
        ahead, batches = _ahead(10.0, 3)
        await asyncio.wait_for(asyncio.gather(*(ahead.ready(f"q{i}") for i in range(3))), 2)
        waiting = asyncio.ensure_future(ahead.ready("alone"))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        ahead.hurry()  # a request waits for this store: send it now
        await asyncio.wait_for(waiting, 2)
        assert batches == [["q0", "q1", "q2"], ["alone"]]

    asyncio.run(main())


def test_a_failed_batch_releases_every_store_counted() -> None:
    async def main() -> None:
        ahead, batches = _ahead(0.01, 32, fail=True)
        await asyncio.wait_for(asyncio.gather(ahead.ready("a"), ahead.ready("b")), 2)
        assert batches == [["a", "b"]] and ahead.failures == 1

    asyncio.run(main())


def test_off_with_no_wait() -> None:
    async def main() -> None:
        ahead, batches = _ahead(0.0, 32)
        await ahead.ready("q")
        assert batches == []

    asyncio.run(main())


def post(proxy: Proxy, text: str, **headers: str) -> Any:
    with proxy.http() as http:
        return http.post("/v1/chat/completions",
                         json={"model": "m1", "messages": user(text)}, headers=headers)


def test_unembedded_stores_share_one_model_call_and_then_hit(make_proxy, upstream) -> None:
    proxy = make_proxy(server={"store_batch_wait_ms": 1000, "store_batch_max": 3})
    texts = [f"distinct question {i} on subject {i * 11}" for i in range(3)]
    before = proxy.embedder.calls
    with ThreadPoolExecutor(3) as pool:  # no-cache: no lookup, so each store must embed
        first = list(pool.map(lambda t: post(proxy, t, **{"cache-control": "no-cache"}), texts))
    assert all(r.headers["x-prism-cache"] == "miss" for r in first)
    proxy.settle()
    ahead = proxy.app.state.prism.embed_ahead
    assert (ahead.batches, ahead.texts) == (1, 3)
    assert proxy.embedder.calls == before + 1  # three stores, one model call
    assert proxy.entries() == 3
    for text in texts:
        assert post(proxy, text + " ?").headers["x-prism-cache"] == "hit"
    assert upstream.generations == 3


def test_an_identical_request_does_not_wait_for_the_batch(make_proxy, upstream) -> None:
    proxy = make_proxy(server={"store_batch_wait_ms": 1000})
    text = "how long does a passport renewal take"
    assert post(proxy, text, **{"cache-control": "no-cache"}).headers["x-prism-cache"] == "miss"
    assert len(proxy.app.state.prism.after_reply) == 1  # its store waits for company
    started = time.monotonic()
    again = post(proxy, text)  # waits for its store, which it sends at once
    assert again.headers["x-prism-cache"] == "hit"
    assert time.monotonic() - started < 0.9  # not the batch's full second
    assert upstream.generations == 1
