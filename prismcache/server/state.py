"""What every route of the proxy shares, built once by :func:`prismcache.server.create_app`."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request

from prismcache.adaptive import AdaptivePolicy
from prismcache.cache import SemanticCache
from prismcache.economics import EconomicsTracker
from prismcache.server.auth import Auth
from prismcache.server.background import AfterReply, EmbedAhead
from prismcache.server.budget import LookupBudget
from prismcache.server.coalesce import Coalescer
from prismcache.server.learning import RecentHits
from prismcache.server.metrics import ProxyMetrics
from prismcache.server.settings import ServerSettings
from prismcache.server.upstream import Upstream

if TYPE_CHECKING:
    from prismcache.server.overload import LoadAdmission

__all__ = ["ProxyState", "state_of"]

T = TypeVar("T")
#: threads for blocking cache calls: anyio's default limit, which the proxy used before; the
#: embedder batches the lookups that wait on these threads together, so it must exceed the
#: concurrent requests a batch is made of
THREADS = 40


def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="prismcache-cache")


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
    embed_ahead: EmbedAhead | None = None  # their queries embedded together (create_app)
    budget: LookupBudget = field(default_factory=lambda: LookupBudget(0.0))  # lookups' wait
    recent_hits: RecentHits = field(default_factory=RecentHits)  # feedback's labels
    load_admission: LoadAdmission | None = None  # admission under load (server.overload)
    threads: ThreadPoolExecutor = field(default_factory=_executor)  # shut down by the app

    async def in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking cache call (SQLite, ONNX) on a worker thread, in a copy of the
        caller's context; return its result or raise its exception.

        A caller cancelled meanwhile still waits for the call to end before the cancellation
        goes on (a thread cannot be stopped; so no cache call outlives the request or the
        shutdown that started it), as starlette's ``run_in_threadpool`` did, at a third of
        its cost per call (anyio's capacity limiter and cancel scopes: ~65 us against ~20 us).
        """
        call = partial(contextvars.copy_context().run, fn, *args, **kwargs)
        future = asyncio.get_running_loop().run_in_executor(self.threads, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise


def state_of(request: Request) -> ProxyState:
    """The :class:`ProxyState` of the app serving ``request``."""
    return request.app.state.prism  # type: ignore[no-any-return]
