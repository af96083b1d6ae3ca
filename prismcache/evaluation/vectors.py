"""Embed many texts once, cache the vectors on disk, and serve them by text.

Embedding is the slow part of every evaluation (MiniLM does ~100-300 texts/s on two cores),
while replaying a trace through the cache is fast. So evaluation embeds each distinct text once,
in batches, and keeps the vectors in ``DIR/<embedder id>.keys.npy`` / ``.vecs.npy`` (keyed by a
BLAKE2b digest of the text) for the next run. :class:`PrecomputedEmbedder` then serves those
vectors through the :class:`~prismcache.embedders.Embedder` protocol, under the real
embedder's id, so the cache cannot tell the difference except in time; the real embedder's
single-query latency is measured separately (:func:`measure_latency`) and added back where a
request would have paid it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from prismcache.embedders import Embedder
from prismcache.errors import EmbeddingError

__all__ = ["EmbeddingTable", "PrecomputedEmbedder", "measure_latency"]

_BATCH = 64
_SAVE_EVERY = 16  # batches between checkpoints of the on-disk cache


_DIGEST = 16


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_DIGEST).digest()


class EmbeddingTable:
    """Vectors of texts made by one embedder, optionally persisted under ``cache_dir``.

    >>> from prismcache.embedders import HashEmbedder
    >>> table = EmbeddingTable(HashEmbedder(dim=8))
    >>> table.ensure(["a b", "c d"])
    2
    >>> table.vector("a b").shape
    (8,)
    """

    def __init__(self, embedder: Embedder, cache_dir: str | Path | None = None) -> None:
        self.embedder = embedder
        self._rows: dict[bytes, int] = {}
        self._keys: list[bytes] = []  # the digest of each vector row, in row order
        self._vectors = np.zeros((0, embedder.dim), dtype=np.float32)
        self._path: Path | None = None
        if cache_dir is not None:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.id)
            self._path = Path(cache_dir) / stem
            self._load()

    def _load(self) -> None:
        if self._path is None:
            return
        keys_file = self._path.with_suffix(".keys.npy")
        vecs_file = self._path.with_suffix(".vecs.npy")
        if not (keys_file.exists() and vecs_file.exists()):
            return
        keys = np.load(keys_file)
        vectors = np.load(vecs_file)
        if (keys.ndim != 2 or keys.shape != (len(vectors), _DIGEST)
                or vectors.shape[1:] != (self.embedder.dim,)):
            return  # a torn or foreign cache: rebuild it rather than trust it
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._keys = [k.tobytes() for k in keys]
        self._rows = {k: i for i, k in enumerate(self._keys)}

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Raw digests as uint8 rows, one per vector row ("S16" would strip trailing NULs).
        keys = np.frombuffer(b"".join(self._keys), dtype=np.uint8).reshape(-1, _DIGEST)
        for suffix, array in ((".keys.npy", keys), (".vecs.npy", self._vectors)):
            target = self._path.with_suffix(suffix)
            tmp = target.with_name(target.name + ".tmp.npy")
            np.save(tmp, array)
            os.replace(tmp, target)

    def __len__(self) -> int:
        return len(self._rows)

    def ensure(self, texts: Iterable[str], *, progress: bool = False) -> int:
        """Embed every text not yet in the table (in batches of 64); return how many were
        embedded. Saves to disk when anything was added. Raises what the embedder raises."""
        missing: dict[bytes, str] = {}
        for text in texts:
            key = _digest(text)
            if key not in self._rows and key not in missing:
                missing[key] = text
        if not missing:
            return 0
        # Short texts first: batches pad to their longest text, so mixing lengths wastes work.
        items = sorted(missing.items(), key=lambda item: len(item[1]))
        started = time.perf_counter()
        for start in range(0, len(items), _BATCH):
            chunk = items[start:start + _BATCH]
            vectors = self.embedder.embed([text for _, text in chunk])
            base = len(self._vectors)
            self._vectors = np.concatenate([self._vectors, vectors])
            for i, (key, _) in enumerate(chunk):
                self._rows[key] = base + i
                self._keys.append(key)
            done = start + len(chunk)
            if (start // _BATCH) % _SAVE_EVERY == _SAVE_EVERY - 1:
                self._save()  # a long run that is interrupted keeps what it embedded
                if progress:
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    print(f"  embedded {done}/{len(items)} ({rate:.0f} texts/s)", flush=True)
        self._vectors = np.ascontiguousarray(self._vectors, dtype=np.float32)
        self._save()
        return len(items)

    def vector(self, text: str) -> np.ndarray:
        """The vector of ``text``; raises ``KeyError`` if it was never embedded."""
        return self._vectors[self._rows[_digest(text)]]

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """Rows for ``texts`` (all must have been embedded), shape ``(len(texts), dim)``."""
        return self._vectors[[self._rows[_digest(t)] for t in texts]]


class PrecomputedEmbedder:
    """An :class:`~prismcache.embedders.Embedder` that serves a table's vectors by text.

    It reports the table embedder's ``name``, ``dim`` and ``id``, so vectors stored through it
    are interchangeable with the real embedder's. A text missing from the table raises
    :class:`~prismcache.errors.EmbeddingError` (evaluation embeds everything up front).
    """

    def __init__(self, table: EmbeddingTable) -> None:
        self._table = table
        self.calls = 0  # embed() calls served: each one a real model call avoided
        self.name: str = table.embedder.name
        self.dim: int = table.embedder.dim

    @property
    def id(self) -> str:
        """The real embedder's id."""
        return self._table.embedder.id

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Rows for ``texts`` from the table; raises :class:`EmbeddingError` for unknown text."""
        self.calls += 1
        try:
            return np.ascontiguousarray(self._table.matrix(list(texts)))
        except KeyError:
            raise EmbeddingError("text was not precomputed for this evaluation") from None


def measure_latency(embedder: Embedder, texts: Sequence[str], *, samples: int = 200,
                    seed: int = 0) -> np.ndarray:
    """Seconds one ``embed([text])`` call takes, for ``samples`` texts drawn from ``texts``
    (after two warm-up calls). Returns the measured latencies; empty when ``texts`` is."""
    if not texts:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    chosen = [texts[i] for i in rng.integers(0, len(texts), size=samples)]
    for text in chosen[:2]:
        embedder.embed([text])
    out = np.empty(len(chosen))
    for i, text in enumerate(chosen):
        started = time.perf_counter()
        embedder.embed([text])
        out[i] = time.perf_counter() - started
    return out
