"""What every route of the proxy shares, built once by :func:`prismcache.server.create_app`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from prismcache.adaptive import AdaptivePolicy
from prismcache.cache import SemanticCache
from prismcache.economics import EconomicsTracker
from prismcache.server.auth import Auth
from prismcache.server.background import AfterReply
from prismcache.server.coalesce import Coalescer
from prismcache.server.learning import RecentHits
from prismcache.server.metrics import ProxyMetrics
from prismcache.server.settings import ServerSettings
from prismcache.server.upstream import Upstream

if TYPE_CHECKING:
    from prismcache.server.overload import LoadAdmission

__all__ = ["ProxyState", "state_of"]

T = TypeVar("T")


@dataclass(slots=True)
class ProxyState:
    """The cache, the settings and the proxy's shared machinery."""

    cache: SemanticCache
    settings: ServerSettings
    auth: Auth
    upstream: Upstream
    metrics: ProxyMetrics
    coalescer: Coalescer
    economics: EconomicsTracker | None = None
    adaptive: AdaptivePolicy | None = None
    after_reply: AfterReply = field(default_factory=AfterReply)  # stores off the reply path
    recent_hits: RecentHits = field(default_factory=RecentHits)  # feedback's labels
    load_admission: LoadAdmission | None = None  # admission under load (server.overload)

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking cache call (SQLite, ONNX) on a worker thread."""
        return await run_in_threadpool(fn, *args, **kwargs)


def state_of(request: Request) -> ProxyState:
    """The :class:`ProxyState` of the app serving ``request``."""
    return request.app.state.prism  # type: ignore[no-any-return]
