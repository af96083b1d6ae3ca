"""The Starlette application: routes, the pass-through endpoints, health and metrics."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from functools import partial

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from prismcache.cache import SemanticCache
from prismcache.embedders import BatchingEmbedder
from prismcache.server.admin import admin_routes
from prismcache.server.auth import Auth
from prismcache.server.background import AfterReply, EmbedAhead
from prismcache.server.budget import LookupBudget
from prismcache.server.coalesce import Coalescer
from prismcache.server.completions import completions
from prismcache.server.dashboard import Sampler, dashboard_routes
from prismcache.server.forward import passthrough
from prismcache.server.metrics import ProxyMetrics
from prismcache.server.overload import LoadAdmission, UpstreamGate
from prismcache.server.settings import ServerSettings
from prismcache.server.state import ProxyState, state_of
from prismcache.server.timeline import Timeline
from prismcache.server.upstream import Upstream
from prismcache.server.wire import error_response, json_response
from prismcache.stores import redact_url

__all__ = ["create_app"]

log = logging.getLogger("prismcache.server")


def create_app(cache: SemanticCache, settings: ServerSettings) -> Starlette:
    """The proxy as an ASGI app over ``cache``, forwarding misses to ``settings.upstream``.

    The app does not own ``cache``: the caller closes it after the server stops. Raises
    ``ValueError`` when ``settings.upstream`` is not set.

    >>> from prismcache import SemanticCache
    >>> cache = SemanticCache.open({"store": "memory://", "embedder": "hash:64",
    ...                             "classifier": {"examples": None}})
    >>> app = create_app(cache, ServerSettings(upstream="http://localhost:8000/v1"))
    >>> sorted(r.path for r in app.routes)[:3]
    ['/admin/feedback', '/admin/invalidate', '/admin/stats']
    >>> cache.close()
    """
    if not settings.upstream:
        raise ValueError("no upstream: pass --upstream URL or set server.upstream")
    upstream = Upstream(settings.upstream, timeout=settings.timeout,
                        connect_timeout=settings.connect_timeout)
    auth = Auth(settings)
    # Only configured tenants and categories are metric labels: clients cannot grow /metrics.
    labels = ProxyMetrics(tenants=auth.tenant_names, categories=cache.config.categories)
    state = ProxyState(cache=cache, settings=settings, auth=auth, upstream=upstream,
                       metrics=labels, after_reply=AfterReply(limit=settings.store_queue),
                       budget=LookupBudget(settings.lookup_budget_ms),
                       coalescer=Coalescer(
                           UpstreamGate(max_wait=settings.upstream_queue_wait,
                                        shed=settings.upstream_shed,
                                        shed_early=settings.upstream_shed_early,
                                        memory=settings.load_admission_memory)
                           if settings.upstream_gate else None))
    # the stores' batches call the model beside the lookups' queue, not in it: a batch of
    # stores would hold a lookup waiting behind it for the whole batch
    embedder = cache.embedder
    inner = embedder.inner if isinstance(embedder, BatchingEmbedder) else embedder
    state.embed_ahead = EmbedAhead(partial(state.in_thread, cache.embed_ahead, embed=inner.embed),
                                   max_wait=settings.store_batch_wait_ms / 1000,
                                   max_batch=settings.store_batch_max)
    # The proxy feeds the live controllers the cache resolves its policies through: the
    # economics (always measured, GET /admin/economics; they disable a category only when the
    # config says auto_disable) and load-adaptive control (when `adaptive:` is configured).
    state.economics = cache.policies.economics
    state.adaptive = cache.policies.adaptive
    if settings.load_admission_min_reuse > 0:  # admission under load, before the cache's own
        state.load_admission = LoadAdmission(
            min_reuse=settings.load_admission_min_reuse,
            min_stores=settings.load_admission_min_stores,
            memory=settings.load_admission_memory, then=cache.admission)
        cache.admission = state.load_admission
    sampler = Sampler(state, Timeline())  # the dashboard's last hour

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("proxying to %s (%s mode)", redact_url(settings.upstream),
                 "pass-through" if settings.pass_through else "configured-tenants")
        sampler.start()
        try:
            yield
        finally:
            await sampler.stop()
            await state.after_reply.drain(settings.shutdown_timeout)  # store what was served
            await upstream.aclose()
            state.threads.shutdown(wait=True)  # every cache call ended: the cache may close
            if state.load_admission is not None and cache.admission is state.load_admission:
                cache.admission = state.load_admission.then  # the cache outlives the app

    routes = [
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/{path:path}", passthrough, methods=["GET", "POST", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin_routes(),
        *dashboard_routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.prism = state
    app.state.prism_sampler = sampler
    return app


async def healthz(request: Request) -> Response:
    """Liveness: the process serves HTTP. (It does not touch the store: a broken store is
    failed open, not a reason to restart the proxy.)"""
    state = state_of(request)
    return json_response({"status": "ok", "inflight": state.metrics.inflight,
                          "pid": os.getpid()})  # which worker of `serve --workers` answered


async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the proxy's metrics and the cache's size. With a
    metrics token configured, it needs that token or the admin token (else 401)."""
    state = state_of(request)
    if not state.auth.may_read_metrics(request.headers):
        return error_response(401, "/metrics needs Authorization: Bearer <metrics token>",
                              type="authentication_error", code="invalid_metrics_token")
    stats = await state.in_thread(state.cache.stats)
    text = state.metrics.render(stats)
    if state.adaptive is not None:
        text += "\n".join(state.adaptive.metric_lines(state.cache.config.categories)) + "\n"
    if state.economics is not None:
        text += "\n".join(state.economics.metric_lines()) + "\n"
    if (calibrator := state.cache.policies.calibration) is not None:
        text += "\n".join(calibrator.metric_lines()) + "\n"
    if (budget := state.cache.index_budget) is not None:
        text += "\n".join(budget.metric_lines()) + "\n"
    if state.load_admission is not None:
        text += "\n".join(state.load_admission.metric_lines()) + "\n"
    if isinstance(gate := state.coalescer.gate, UpstreamGate):
        text += "\n".join(gate.metric_lines()) + "\n"
    if (lost := getattr(state.cache.document_store, "touches_lost", None)) is not None:
        text += ("# HELP prismcache_store_touches_lost_total Hits whose touch (count, last "
                 "access) the store could not record: Redis was unreachable.\n"
                 "# TYPE prismcache_store_touches_lost_total counter\n"
                 f"prismcache_store_touches_lost_total {lost}\n")
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
