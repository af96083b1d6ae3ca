"""Shared fixtures: a tickable clock, and in-memory implementations of the seams that can be
told to fail (test doubles implement the real protocols; nothing is patched)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from prismcache import SemanticCache
from prismcache.embedders import HashEmbedder
from prismcache.entry import Entry, EntryRef, UsageCount
from prismcache.errors import EmbeddingError, StoreUnavailable
from prismcache.quotas import Quotas
from prismcache.stores.memory import MemoryStore

T0 = 1_800_000_000.0


class FakeClock:
    """A wall clock that only moves when ticked."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class FlakyStore:
    """A MemoryStore that raises StoreUnavailable from every method while ``down``."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("store is down (test)")

    def put(self, entry: Entry) -> None:
        self._check()
        self.inner.put(entry)

    def get(self, entry_id: int) -> Entry | None:
        self._check()
        return self.inner.get(entry_id)

    def touch(self, entry_id: int, *, now: float, priority: float) -> None:
        self._check()
        self.inner.touch(entry_id, now=now, priority=priority)

    def delete(self, entry_ids: Iterable[int]) -> list[EntryRef]:
        self._check()
        return self.inner.delete(entry_ids)

    def find(self, **filters: Any) -> list[EntryRef]:
        self._check()
        return self.inner.find(**filters)

    def evict_over(self, category: str, *, max_entries: int | None,
                   max_bytes: int | None) -> list[EntryRef]:
        self._check()
        return self.inner.evict_over(category, max_entries=max_entries, max_bytes=max_bytes)

    def evict_for(self, category: str, quotas: Quotas) -> list[EntryRef]:
        self._check()
        return self.inner.evict_for(category, quotas)

    def expire(self, now: float) -> list[EntryRef]:
        self._check()
        return self.inner.expire(now)

    def scan(self, *, since: float | None = None, documents: bool = True) -> Iterator[Entry]:
        self._check()
        return self.inner.scan(since=since, documents=documents)

    def usage(self) -> dict[str, UsageCount]:
        self._check()
        return self.inner.usage()

    def close(self) -> None:
        self.inner.close()


class CountingEmbedder:
    """HashEmbedder that counts calls and can be told to fail or return a wrong shape."""

    def __init__(self, dim: int = 64) -> None:
        self.inner = HashEmbedder(dim=dim)
        self.name, self.dim = self.inner.name, dim
        self.calls = 0
        self.fail = False
        self.wrong_dim = False

    @property
    def id(self) -> str:
        return self.inner.id

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise EmbeddingError("embedder is down (test)")
        if self.wrong_dim:
            return np.ones((len(texts), self.dim + 1), dtype=np.float32)
        return self.inner.embed(texts)


def chat(query: str, *, model: str = "m1", system: str | None = None,
         history: Sequence[tuple[str, str]] = (), **extra: Any) -> dict[str, Any]:
    """An OpenAI chat-completions request body."""
    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages += [{"role": role, "content": text} for role, text in history]
    messages.append({"role": "user", "content": query})
    return {"model": model, "messages": messages, **extra}


def reply(text: str, *, finish_reason: str = "stop", tokens: int = 50) -> dict[str, Any]:
    """An OpenAI chat-completion response body."""
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "model": "m1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": tokens - 10, "total_tokens": tokens},
    }


# Categories with known thresholds for tests, no classifier (the hash embedder has no sense).
TEST_CONFIG: dict[str, Any] = {
    "store": "memory://",
    "embedder": "hash:64",
    "classifier": {"examples": None},
    "rules": [],
    "capacity": {"entries": 1000},
    # These tests pin the classic rule (cosine >= threshold, guards) on the hash embedder;
    # the verifier's decisions are tested in test_decision.py with the bundled embedder.
    "defaults": {"verifier": "none"},
    "categories": {
        "strict": {"threshold": 0.99, "ttl": "1h", "quota": 0.5},
        "loose": {"threshold": 0.5, "ttl": "1h", "quota": 0.5},
    },
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_cache(clock: FakeClock) -> Iterator[Callable[..., SemanticCache]]:
    """Build caches over TEST_CONFIG merged with overrides; closes them after the test."""
    opened: list[SemanticCache] = []

    def make(config: dict[str, Any] | None = None, **parts: Any) -> SemanticCache:
        merged = {**TEST_CONFIG, **(config or {})}
        parts.setdefault("embedder", CountingEmbedder())
        cache = SemanticCache.open(merged, clock=clock, **parts)
        opened.append(cache)
        return cache

    yield make
    for cache in opened:
        cache.close()
