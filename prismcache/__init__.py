"""prismcache: a category-aware semantic cache for LLM serving.

>>> from prismcache import SemanticCache
>>> cache = SemanticCache.open()          # bundled embedder, SQLite file, built-in policies

See the README for the quickstart and ``docs/`` for the architecture.
"""

from prismcache.cache import SemanticCache
from prismcache.config import CacheConfig, CategoryPolicy, ClassifierConfig, Rule, load_config
from prismcache.embedders import Embedder, HashEmbedder, open_embedder
from prismcache.entry import Entry, EntryRef
from prismcache.errors import (
    ConfigError,
    EmbedderMismatch,
    EmbeddingError,
    PrismCacheError,
    RequestError,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    UpstreamError,
)
from prismcache.integrations import wrap
from prismcache.request import RequestLimits
from prismcache.results import CategoryStats, Hit, LookupResult, Miss, Stored
from prismcache.stores import DocumentStore, open_store

__version__ = "0.1.0"

__all__ = [
    "CacheConfig",
    "CategoryPolicy",
    "CategoryStats",
    "ClassifierConfig",
    "ConfigError",
    "DocumentStore",
    "EmbedderMismatch",
    "Embedder",
    "EmbeddingError",
    "Entry",
    "EntryRef",
    "HashEmbedder",
    "Hit",
    "LookupResult",
    "Miss",
    "PrismCacheError",
    "RequestError",
    "RequestLimits",
    "Rule",
    "SemanticCache",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "Stored",
    "UpstreamError",
    "load_config",
    "open_embedder",
    "open_store",
    "wrap",
]
