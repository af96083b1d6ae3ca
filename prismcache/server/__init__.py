"""``prismcache serve``: an OpenAI-compatible caching proxy (needs ``prismcache[server]``).

>>> from prismcache import SemanticCache
>>> from prismcache.server import ServerSettings, create_app
>>> cache = SemanticCache.open({"store": "memory://", "embedder": "hash:64",
...                             "classifier": {"examples": None}})
>>> settings = ServerSettings.from_config({"upstream": "http://localhost:8000/v1"})
>>> app = create_app(cache, settings)      # run it with uvicorn
>>> cache.close()

See ``docs/proxy.md``.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the proxy needs starlette and uvicorn: pip install 'prismcache[server]'") from exc

from prismcache.server.app import create_app
from prismcache.server.settings import ServerSettings, TenantKey

__all__ = ["ServerSettings", "TenantKey", "create_app"]
