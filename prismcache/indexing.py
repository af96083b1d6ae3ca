"""The cache's vectors and the index that holds them: the embedder's query vectors (with a
small memo, so a lookup and the store that follows it, or a store batched ahead, embed a query
once), the pre-filter's static vectors, and the in-memory tiers rebuilt from the store or a
snapshot.

:class:`IndexPath` is a base class of :class:`~prismcache.SemanticCache` and reads the state the
cache assembles (config, store, embedder, clock, index spec); it is not used alone.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from prismcache import decision
from prismcache.config import CacheConfig, CategoryPolicy
from prismcache.embedders import Embedder
from prismcache.embedders.static import StaticEmbedder
from prismcache.errors import ConfigError, EmbeddingError
from prismcache.prefilter import Prefilter
from prismcache.request import Context
from prismcache.tiers import Tiers

__all__ = ["IndexPath", "static_embedder"]

log = logging.getLogger("prismcache")

_MEMO_SIZE = 1024  # query vectors kept for the lookup or store that embeds the same text next


class IndexPath:
    """The embedding and index-building methods of :class:`~prismcache.SemanticCache`."""

    def _init_vectors(self) -> None:
        """Set up the memo and the pre-filter's static embedder (before the tiers load)."""
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._static = static_embedder(self.config, self._embedder)

    def embed_ahead(self, queries: Sequence[str], *,
                    embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> int:
        """Embed those of ``queries`` (request keys' ``query`` texts) the cache's memo lacks,
        in one call of the embedder (or of ``embed``: the same model reached another way,
        e.g. past a batching wrapper's queue), and keep their vectors in the memo, where the
        lookup or store that embeds that query next finds it: for work that can wait to be
        batched (the proxy's stores after replies). Returns how many texts were embedded.
        Raises :class:`EmbeddingError` when the embedder fails (nothing is memoized then)."""
        with self._memo_lock:
            todo = list(dict.fromkeys(q for q in queries if q not in self._memo))
        if not todo:
            return 0
        vectors = self._checked((embed or self._embedder.embed)(todo), len(todo))
        for query, vector in zip(todo, vectors, strict=True):
            self._memoize(query, vector)
        return len(todo)

    def _embed(self, text: str) -> np.ndarray:
        with self._memo_lock:
            vector = self._memo.get(text)
            if vector is not None:
                self._memo.move_to_end(text)
                return vector
        vector = self._checked(self._embedder.embed([text]), 1)[0]
        self._memoize(text, vector)
        return vector

    def _checked(self, vectors: np.ndarray, n: int) -> np.ndarray:
        """``vectors``, when they are ``n`` rows of the embedder's dimension."""
        if vectors.shape != (n, self._embedder.dim):
            raise EmbeddingError(
                f"embedder {self._embedder.id} returned shape {vectors.shape}, "
                f"expected ({n}, {self._embedder.dim})")
        return vectors

    def _memoize(self, text: str, vector: np.ndarray) -> None:
        with self._memo_lock:
            self._memo[text] = vector
            self._memo.move_to_end(text)
            if len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)

    def _context_vector(self, query: Context | None, context: Context | None,
                        policy: CategoryPolicy, *, stored: np.ndarray | None = None
                        ) -> np.ndarray | None:
        """:func:`decision.context_embedding` with this cache's embedder and memo."""
        return decision.context_embedding(query, context, policy, self._embed, stored=stored)

    def _new_prefilter(self) -> Prefilter | None:
        """An empty :class:`Prefilter` when the config enables it, else ``None``."""
        if self._static is None:
            return None
        return Prefilter(self._static, bound=self.config.prefilter.bound,
                         spec=self._index_spec)

    def _load_tiers(self) -> Tiers:
        dim, embedder_id = self._embedder.dim, self._embedder.id
        now = self._clock()
        if self.config.index.get("max_bytes") is not None:  # partitions load when first used
            return Tiers(dim=dim, embedder_id=embedder_id, spec=self._index_spec,
                         max_bytes=self.config.index["max_bytes"],
                         loader=self._store.scan_partition, prefilter=self._new_prefilter())
        if self.config.snapshot and Path(self.config.snapshot, "manifest.json").exists():
            try:
                tiers, taken_at = Tiers.load(Path(self.config.snapshot),
                                             embedder_id=embedder_id, spec=self._index_spec,
                                             prefilter=self._new_prefilter())
                tiers.add(self._store.scan(since=taken_at, documents=False))
                return tiers
            except (OSError, ValueError, KeyError) as exc:
                log.warning("snapshot %s unusable (%s); rebuilding from the store",
                            self.config.snapshot, exc)
        tiers = Tiers(dim=dim, embedder_id=embedder_id, spec=self._index_spec,
                      prefilter=self._new_prefilter())
        self._store.expire(now)
        tiers.add(self._store.scan(documents=False))
        return tiers


def static_embedder(config: CacheConfig, embedder: Embedder) -> StaticEmbedder | None:
    """The pre-filter's static embedder when ``prefilter.enabled`` (``auto``: only when the
    cache embeds with the bundled model, whose static table it is and against which its
    bound was measured); raises :class:`ConfigError` for ``true`` with another embedder."""
    if config.prefilter.enabled is False:
        return None
    from prismcache.embedders.minilm import BUNDLED_NAME, bundled_tokenizer

    if embedder.name != BUNDLED_NAME:
        if config.prefilter.enabled == "auto":
            return None
        raise ConfigError(f"prefilter.enabled needs the bundled embedder ({BUNDLED_NAME!r}): "
                          f"its static table is distilled from it; this cache embeds with "
                          f"{embedder.id!r}")
    return StaticEmbedder.bundled(bundled_tokenizer())
