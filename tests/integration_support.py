"""What the integration tests share: a paraphrase pair the hash embedder matches, and a cache
that routes everything to the loose category (threshold 0.5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from prismcache import SemanticCache

PASSWORD = "how do I reset my password"
PARAPHRASE = "how can I reset my password?"  # 0.88 similar to PASSWORD with hash:64


@pytest.fixture
def cache(make_cache: Callable[..., SemanticCache]) -> SemanticCache:
    """A fresh cache over the tests' config, every request in the loose category."""
    return make_cache({"default_category": "loose"})


def entries(cache: SemanticCache) -> int:
    """Entries the cache's store holds."""
    return sum(s.entries for s in cache.stats().values())
