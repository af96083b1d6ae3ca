"""The one exception tree of prismcache.

Every error prismcache raises on purpose is a :class:`PrismCacheError`::

    PrismCacheError
    ├── ConfigError            invalid YAML, unknown keys, out-of-range values
    ├── RequestError           a request body the cache cannot key (empty, too large, not UTF-8)
    ├── StoreError             the document store failed
    │   ├── StoreUnavailable   cannot reach / open the store
    │   └── StoreTimeout       the store did not answer in time
    ├── EmbeddingError         the embedder failed or returned something unusable
    │   └── EmbedderMismatch   vectors of one embedder met an index or entry of another
    ├── IndexError_            the vector index refused an operation (wrong dimension, ...)
    ├── VerifierError          the match verifier failed (a missing model, a judge that timed out)
    └── UpstreamError          the model behind the proxy failed (timeout, 4xx/5xx)

Each backend translates its driver's exceptions into this tree in one place, so callers never
need to import ``sqlite3`` or ``redis`` to handle a failure. ``SemanticCache.lookup`` turns a
``StoreError``, ``EmbeddingError`` or ``VerifierError`` into a counted, logged miss (fail
open); a ``RequestError`` is the caller's bug and is raised.
"""

from __future__ import annotations

__all__ = [
    "FAIL_OPEN",
    "ConfigError",
    "EmbedderMismatch",
    "EmbeddingError",
    "IndexError_",
    "PrismCacheError",
    "RequestError",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "UpstreamError",
    "VerifierError",
]


class PrismCacheError(Exception):
    """Base class of every error prismcache raises deliberately."""


class ConfigError(PrismCacheError, ValueError):
    """The configuration is invalid; the message names the key and the allowed values."""


class RequestError(PrismCacheError, ValueError):
    """A request body cannot be keyed: empty, oversized, malformed or not valid UTF-8."""


class StoreError(PrismCacheError):
    """The document store failed an operation."""


class StoreUnavailable(StoreError):
    """The document store cannot be reached or opened."""


class StoreTimeout(StoreError):
    """The document store did not answer within its timeout."""


class EmbeddingError(PrismCacheError):
    """The embedder failed, or returned vectors of the wrong shape."""


class EmbedderMismatch(EmbeddingError):
    """Vectors made by one embedder met an index or stored entries made by another."""


class IndexError_(PrismCacheError):
    """The vector index refused an operation (for example a vector of the wrong dimension)."""


class VerifierError(PrismCacheError):
    """The match verifier failed; the cache fails open (a miss), counted and logged."""


class UpstreamError(PrismCacheError):
    """The upstream model server failed: timed out, unreachable, or answered 4xx/5xx."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


#: the failures a cache fails open on (a miss or an unstored answer, counted and logged):
#: its store, its embedder, its index or its verifier broke, not the caller's request
FAIL_OPEN: tuple[type[PrismCacheError], ...] = (StoreError, EmbeddingError, IndexError_,
                                                VerifierError)
