"""Fixtures for the proxy tests: the fake upstream and proxies under real uvicorn servers.

Test modules import the fixtures they use: ``from proxy_support import make_proxy, upstream``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from conftest import TEST_CONFIG, CountingEmbedder
from fake_upstream import FakeUpstream, ServerThread, serving_upstream
from prismcache import SemanticCache
from prismcache.config import load_config
from prismcache.server import ServerSettings, create_app
from prismcache.stores import open_store

# TEST_CONFIG with everything routed to the loose category (threshold 0.5), so that the hash
# embedder's paraphrases hit.
PROXY_CONFIG: dict[str, Any] = {**TEST_CONFIG, "default_category": "loose"}
ADMIN_TOKEN = "admin-secret-token"
UPSTREAM_KEY = "sk-upstream-secret"


@dataclass
class Proxy:
    """A running proxy: its URLs, its cache, its settings."""

    server: ServerThread
    cache: SemanticCache
    settings: ServerSettings
    embedder: CountingEmbedder
    app: Any = None
    clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def root(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        """What the ``openai`` client takes as ``base_url``."""
        return self.server.url + "/v1"

    def client(self, api_key: str = "sk-client-a", **kwargs: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` client of the proxy (no retries: tests count calls)."""
        client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0,
                               timeout=kwargs.pop("timeout", 10.0), **kwargs)
        self.clients.append(client)  # closed at teardown
        return client

    def aclient(self, api_key: str = "sk-client-a", **kwargs: Any) -> openai.AsyncOpenAI:
        """An ``openai.AsyncOpenAI`` client of the proxy."""
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0,
                                  timeout=kwargs.pop("timeout", 10.0), **kwargs)

    def http(self, api_key: str | None = "sk-client-a") -> httpx.Client:
        """A plain HTTP client of the proxy's root (for raw bodies and headers), presenting
        ``api_key`` like :meth:`client` does (so both reach the same tenant)."""
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.root, timeout=10.0, headers=headers)

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the proxy has no store after a reply pending (the answers it served
        are stored), for tests that look at the store or the counters right after a miss."""
        after_reply = self.app.state.prism.after_reply
        deadline = time.monotonic() + timeout
        while len(after_reply):
            assert time.monotonic() < deadline, "stores after the reply still pending"
            time.sleep(0.002)

    def entries(self) -> int:
        """Entries the cache's store holds, once the stores after replies are done."""
        self.settle()
        return sum(s.entries for s in self.cache.stats().values())


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """One fake OpenAI upstream per test module (reset by :func:`make_proxy`)."""
    with serving_upstream() as fake:
        yield fake


@pytest.fixture
def make_proxy(upstream: FakeUpstream) -> Iterator[Callable[..., Proxy]]:
    """Start proxies over fresh caches: ``make_proxy(config=..., server=..., store=...)``
    merges ``config`` over :data:`PROXY_CONFIG` and ``server`` over the upstream's URL;
    ``environ`` stands in for the environment the settings read secrets from."""
    started: list[Proxy] = []
    upstream.reset()

    def make(config: Mapping[str, Any] | None = None, server: Mapping[str, Any] | None = None,
             *, store: Any = None, environ: Mapping[str, str] | None = None,
             graceful: float | None = None, verifiers: Mapping[str, Any] | None = None) -> Proxy:
        embedder = CountingEmbedder()
        merged = {**PROXY_CONFIG, **(config or {})}
        if verifiers is None:
            cache = SemanticCache.open(merged, embedder=embedder, store=store)
        else:  # in-memory verifiers in place of the ones the specs name
            settled = load_config(merged)
            cache = SemanticCache(settled, store=store or open_store(settled.store),
                                  embedder=embedder, verifiers=verifiers)
        settings = ServerSettings.from_config(
            {"upstream": upstream.url, **(server or {})},  # type: ignore[attr-defined]
            environ=environ or {})
        app = create_app(cache, settings)
        thread = ServerThread(app, timeout_graceful_shutdown=graceful)
        proxy = Proxy(server=thread.start(), cache=cache, settings=settings, embedder=embedder,
                      app=app)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        for client in proxy.clients:
            client.close()
        proxy.server.stop()
        proxy.cache.close()


def user(text: str) -> list[dict[str, str]]:
    """A one-turn ``messages`` list."""
    return [{"role": "user", "content": text}]
