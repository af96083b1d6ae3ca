"""The proxy under concurrency: the exact tier answered on the event loop (counted once), a
lookup whose embedding would wait past ``server.lookup_budget_ms`` skipped (a ``busy`` miss,
counted; the response still arrives), an idle proxy never skipping, and stores after replies
dropped (counted) once ``server.store_queue`` are pending."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import CountingEmbedder
from fake_upstream import ServerThread

from prismcache import SemanticCache
from prismcache.embedders import BatchingEmbedder
from prismcache.entry import Entry
from prismcache.results import Hit, Miss, MissReason
from prismcache.errors import ConfigError
from prismcache.server import ServerSettings, create_app
from prismcache.server.budget import FLOOR, LookupBudget
from prismcache.stores.memory import MemoryStore
from proxy_support import PROXY_CONFIG, Proxy, make_proxy, upstream, user  # noqa: F401
from test_proxy_after_reply import GatedStore  # a memory store whose put waits for a gate

CACHE_THREAD = "prismcache-cache"  # ProxyState's worker threads


class SlowEmbedder(CountingEmbedder):
    """A hash embedder that takes ``delay`` seconds per call and, while ``gate`` is closed,
    holds every call until the test opens it (``entered`` tells a call is held)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        time.sleep(self.delay)
        return super().embed(texts)


class ThreadNotingStore(MemoryStore):
    """A memory store noting the thread of every ``get`` (``local``: its ``local_reads``)."""

    def __init__(self, local: bool) -> None:
        super().__init__()
        self.local_reads = local
        self.readers: list[str] = []

    def get(self, entry_id: int) -> Entry | None:
        self.readers.append(threading.current_thread().name)
        return super().get(entry_id)


@pytest.fixture
def slow_proxy(upstream) -> Iterator[Callable[..., tuple[Proxy, SlowEmbedder]]]:  # noqa: F811
    """Proxies whose cache embeds through a :class:`BatchingEmbedder` (one model call at a
    time) over a :class:`SlowEmbedder`: ``slow_proxy(delay, server={...})``."""
    started: list[Proxy] = []
    upstream.reset()

    def make(delay: float, server: dict[str, Any] | None = None) -> tuple[Proxy, SlowEmbedder]:
        slow = SlowEmbedder(delay)
        embedder = BatchingEmbedder(slow, concurrency=1)  # type: ignore[arg-type]
        cache = SemanticCache.open(PROXY_CONFIG, embedder=embedder)
        settings = ServerSettings.from_config({"upstream": upstream.url, **(server or {})},
                                              environ={})
        app = create_app(cache, settings)
        proxy = Proxy(server=ServerThread(app).start(), cache=cache, settings=settings,
                      embedder=slow, app=app)
        started.append(proxy)
        return proxy, slow

    yield make
    for proxy in started:
        proxy.embedder.gate.set()  # type: ignore[attr-defined]
        proxy.server.stop()
        proxy.cache.close()


def ask(proxy: Proxy, text: str) -> httpx.Response:
    with proxy.http() as http:
        return http.post("/v1/chat/completions", json={"model": "m1", "messages": user(text)})


def shed(proxy: Proxy, what: str) -> int:
    """The proxy's count of shed work (``lookup`` or ``store``), as /admin/stats reports it
    and as /metrics does."""
    metrics = proxy.app.state.prism.metrics
    line = f'prismcache_shed_total{{what="{what}"}} {int(metrics.shed.value(what))}'
    if metrics.shed.value(what):
        assert line in metrics.render()
    return int(metrics.shed.value(what))


@pytest.mark.parametrize("local", [True, False])
def test_an_exact_hit_is_read_on_the_event_loop_when_the_store_is_local_and_counted_once(
        make_proxy, upstream, local) -> None:  # noqa: F811
    store = ThreadNotingStore(local)
    proxy = make_proxy(store=store)
    first = ask(proxy, "How do I reset my password?")
    proxy.settle()
    store.readers.clear()
    again = ask(proxy, "How do I reset my password?")
    assert first.headers["x-prism-cache"] == "miss" and again.headers["x-prism-cache"] == "hit"
    assert again.json()["choices"] == first.json()["choices"] and upstream.generations == 1
    assert len(store.readers) == 1  # one read of the entry, on the loop or on a cache thread
    assert store.readers[0].startswith(CACHE_THREAD) is not local
    stats = proxy.cache.stats()["loose"]
    assert (stats.lookups, stats.hits, stats.exact_hits, stats.misses) == (2, 1, 1, 1)
    assert proxy.embedder.calls == 1  # the hit embedded nothing


def test_an_idle_proxy_never_sheds_even_with_a_tiny_budget(slow_proxy, upstream) -> None:  # noqa: F811
    proxy, _ = slow_proxy(0.03, server={"lookup_budget_ms": 0.001})
    for i in range(6):  # one at a time: nothing is ever queued ahead of a lookup
        assert ask(proxy, f"question number {i} about billing").headers["x-prism-cache"] \
            == "miss"
        proxy.settle()
    assert shed(proxy, "lookup") == 0
    assert ask(proxy, "question number 2 about billing!").headers["x-prism-cache"] == "hit"
    assert shed(proxy, "lookup") == 0 and upstream.generations == 6


def test_a_saturated_embedder_sheds_lookups_and_the_responses_still_arrive(
        slow_proxy, upstream) -> None:  # noqa: F811
    proxy, slow = slow_proxy(0.05, server={"lookup_budget_ms": 20})
    assert ask(proxy, "how do I reset my password").headers["x-prism-cache"] == "miss"
    proxy.settle()  # the embedder's time per text is now known: ~50 ms
    slow.entered.clear()
    slow.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(ask, proxy, "what is the refund policy")  # its embedding is held
        assert slow.entered.wait(5)
        started = time.perf_counter()
        busy = ask(proxy, "where can I download my invoices")  # 50 ms queued ahead > 20 ms
        waited = time.perf_counter() - started
        exact = ask(proxy, "how do I reset my password")  # the exact tier is still checked
        assert not held.done()
        slow.gate.set()
        assert held.result(10).headers["x-prism-cache"] == "miss"
    assert busy.status_code == 200 and busy.headers["x-prism-cache"] == "miss"
    assert busy.json()["choices"][0]["message"]["content"]
    assert waited < 5  # answered while the embedder was held, not after it
    assert exact.headers["x-prism-cache"] == "hit"
    assert shed(proxy, "lookup") == 1
    with proxy.http(api_key=None) as http:  # pass-through: the admin API is off; the metric
        assert http.get("/metrics").text.count('prismcache_shed_total{what="lookup"} 1') == 1
    proxy.settle()  # the shed request's store came while the embedder was still held:
    assert shed(proxy, "store") == 1  # dropped, not queued behind the work it skipped
    assert ask(proxy, "where can I download my invoices").headers["x-prism-cache"] == "miss"
    proxy.settle()  # now idle: this one is looked up and stored
    assert ask(proxy, "where can I download my invoices").headers["x-prism-cache"] == "hit"
    assert upstream.generations == 4 and shed(proxy, "lookup") == 1


def test_a_budget_of_zero_never_sheds(slow_proxy, upstream) -> None:  # noqa: F811
    proxy, slow = slow_proxy(0.05, server={"lookup_budget_ms": 0})
    ask(proxy, "how do I reset my password")
    proxy.settle()
    slow.entered.clear()
    slow.gate.clear()
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(ask, proxy, "what is the refund policy")
        assert slow.entered.wait(5)
        waiting = pool.submit(ask, proxy, "where can I download my invoices")
        time.sleep(0.2)
        assert not waiting.done()  # it waits for the embedder
        slow.gate.set()
        assert waiting.result(10).status_code == held.result(10).status_code == 200
    assert shed(proxy, "lookup") == 0


def test_stores_past_the_queue_are_dropped_counted_and_never_hold_a_response(
        make_proxy, upstream, caplog) -> None:  # noqa: F811
    store = GatedStore()
    proxy = make_proxy(store=store, server={"store_queue": 1})
    first = ask(proxy, "How do I reset my password?")
    assert store.entered.wait(5)  # its store is pending, held at the gate
    with caplog.at_level("DEBUG", logger="prismcache.server"):
        second = ask(proxy, "What is the refund policy of the shop?")
    assert first.status_code == second.status_code == 200
    assert shed(proxy, "store") == 1
    assert "not stored" in caplog.text and "server.store_queue" in caplog.text
    store.gate.set()
    assert proxy.entries() == 1  # the first answer; the second was dropped
    assert ask(proxy, "How do I reset my password?").headers["x-prism-cache"] == "hit"


def test_admin_stats_report_shed_work(make_proxy) -> None:  # noqa: F811
    proxy = make_proxy(server={"admin_token_env": "ADMIN"}, environ={"ADMIN": "tok-123"})
    proxy.app.state.prism.metrics.shed.inc("store")
    with proxy.http(api_key=None) as http:
        stats = http.get("/admin/stats", headers={"authorization": "Bearer tok-123"}).json()
    assert stats["proxy"]["shed"] == {"lookup": 0, "store": 1}


def test_the_two_phases_of_a_lookup_are_one_lookup(make_cache) -> None:
    cache = make_cache({"default_category": "loose"})
    body = {"model": "m1", "messages": user("How do I reset my password?")}
    pending = cache.lookup_exact(body, tenant="acme")
    assert not isinstance(pending, (Hit, Miss))
    assert pending.busy().reason is MissReason.BUSY and pending.busy().category == "loose"
    assert cache.lookup_rest(pending).reason is MissReason.EMPTY
    reply = {"choices": [{"message": {"role": "assistant", "content": "Like so."},
                          "finish_reason": "stop"}]}
    assert cache.store(body, reply, tenant="acme").stored
    hit = cache.lookup_exact(body, tenant="acme")
    assert isinstance(hit, Hit) and hit.tier == "exact"
    assert not isinstance(cache.lookup_exact(body, tenant="globex"), Hit)
    stats = cache.stats()["loose"]
    assert (stats.lookups, stats.hits, stats.misses) == (2, 1, 1)  # busy() counted nothing


def test_the_backlog_is_zero_when_idle_and_grows_with_the_queue() -> None:
    slow = SlowEmbedder(0.02)
    embedder = BatchingEmbedder(slow, concurrency=1)  # type: ignore[arg-type]
    assert embedder.backlog() == 0.0
    embedder.embed(["one"])  # ~20 ms a text, now known
    assert embedder.backlog() == 0.0  # nothing runs: a caller would start at once
    slow.entered.clear()
    slow.gate.clear()
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(embedder.embed, [f"text {i}"]) for i in range(3)]
        assert slow.entered.wait(5)
        deadline = time.monotonic() + 5
        while embedder.backlog() < 0.05 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert 0.05 <= embedder.backlog() < 0.2  # 3 texts x ~20 ms, one model call at a time
        slow.gate.set()
        for call in calls:
            assert call.result(10).shape == (1, slow.dim)
    assert embedder.backlog() == 0.0


def test_the_automatic_budget_is_what_a_lookup_is_expected_to_save() -> None:
    budget = LookupBudget(None)
    assert budget.seconds() is None and not budget.skip(10.0)  # no upstream answer timed yet
    budget.upstream_took(0.100)
    assert budget.seconds() == pytest.approx(0.100)  # hit rate 1.0 until lookups miss
    assert not budget.skip(0.090) and budget.skip(0.110)
    for _ in range(200):  # traffic of new questions: a queued lookup is not worth its wait
        budget.looked_up(hit=False)
    assert budget.seconds() == FLOOR and budget.skip(0.003) and not budget.skip(0.0)
    for _ in range(200):
        budget.looked_up(hit=True)
    assert budget.seconds() == pytest.approx(0.100, rel=0.01)
    assert LookupBudget(0).seconds() is None and not LookupBudget(0).skip(10.0)
    assert LookupBudget(5).skip(0.006) and not LookupBudget(5).skip(0.004)


def test_the_budget_setting_is_auto_a_number_or_an_error() -> None:
    assert ServerSettings.from_config({}).lookup_budget_ms == 0  # never skip by default
    assert ServerSettings.from_config({"lookup_budget_ms": "auto"}).lookup_budget_ms is None
    assert ServerSettings.from_config({"lookup_budget_ms": 0}).lookup_budget_ms == 0
    for bad in ("fast", -1, True):
        with pytest.raises(ConfigError, match="lookup_budget_ms"):
            ServerSettings.from_config({"lookup_budget_ms": bad})
    with pytest.raises(ConfigError, match="store_queue"):
        ServerSettings.from_config({"store_queue": 0})
