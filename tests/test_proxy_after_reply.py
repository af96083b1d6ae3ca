"""Store after reply: a miss's answer reaches the client before it is stored, an identical
request after completion still hits, and a store that fails in the background is counted."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import FlakyStore
from prismcache.entry import Entry
from proxy_support import Proxy, make_proxy, upstream, user  # noqa: F401 - fixtures

BODY = {"model": "m1", "messages": user("How do I reset my password?")}


class GatedStore(FlakyStore):
    """A memory store whose ``put`` waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def put(self, entry: Entry) -> None:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        super().put(entry)


class BrokenStore(FlakyStore):
    """A memory store whose ``put`` fails with an error the cache does not expect."""

    def put(self, entry: Entry) -> None:
        raise RuntimeError("a bug in the store (test)")


def post(proxy: Proxy, stream: bool) -> httpx.Response:
    with proxy.http() as http:
        return http.post("/v1/chat/completions", json={**BODY, "stream": stream})


def content(raw: httpx.Response) -> str:
    """The answer's text, from a JSON answer or an event stream."""
    if not raw.text.startswith("data:"):
        return raw.json()["choices"][0]["message"]["content"]
    chunks = [json.loads(line[len("data: "):]) for line in raw.text.splitlines()
              if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_is_released_before_it_is_stored_and_an_identical_request_hits(
        make_proxy, upstream, stream) -> None:
    store = GatedStore()
    proxy = make_proxy(store=store)
    first = post(proxy, stream)  # returns while the store is held at the gate
    assert first.status_code == 200 and first.headers["x-prism-cache"] == "miss"
    assert store.entered.wait(5) and not list(store.inner.scan())  # stored after the reply
    if stream:
        assert first.text.endswith("data: [DONE]\n\n")
    with ThreadPoolExecutor(1) as pool:
        follower = pool.submit(post, proxy, stream)
        time.sleep(0.2)  # the follower waits on the pending store, not on the upstream
        store.gate.set()
        again = follower.result(10)
    assert again.headers["x-prism-cache"] == "hit"
    assert content(again) == content(first)
    assert upstream.generations == 1


def test_an_identical_request_right_after_completion_hits(make_proxy, upstream) -> None:
    proxy = make_proxy()
    for stream in (False, True, False, True):
        with proxy.http() as http:
            body = {**BODY, "messages": user(f"question number {int(stream)}"), "stream": stream}
            first = http.post("/v1/chat/completions", json=body)
            again = http.post("/v1/chat/completions", json=body)
        assert again.headers["x-prism-cache"] == "hit", first.headers["x-prism-cache"]
    assert upstream.generations == 2


def test_a_store_failing_after_the_reply_is_counted_and_logged(make_proxy, upstream,
                                                               caplog) -> None:
    caplog.set_level(logging.WARNING, logger="prismcache.server")
    proxy = make_proxy(store=BrokenStore())
    for stream in (False, True):
        raw = post(proxy, stream)
        assert raw.status_code == 200 and raw.headers["x-prism-cache"] == "miss"
    proxy.settle()
    with proxy.http() as http:
        text = http.get("/metrics").text
    assert 'prismcache_cache_errors_total{operation="store"} 2' in text
    assert 'prismcache_stores_total{category="loose",outcome="error"} 2' in text
    assert proxy.app.state.prism.after_reply.failures == 2
    assert any("after the reply failed" in r.getMessage() for r in caplog.records)
    assert post(proxy, False).headers["x-prism-cache"] == "miss"  # nothing stored, nothing lost
