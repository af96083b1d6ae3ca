"""The Starlette application: routes, the pass-through endpoints, health and metrics."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from prismcache.adaptive import AdaptivePolicy, AdaptiveSettings
from prismcache.cache import SemanticCache
from prismcache.economics import EconomicsSettings, EconomicsTracker, chain_hooks
from prismcache.errors import UpstreamError
from prismcache.server.admin import admin_routes
from prismcache.server.auth import Auth
from prismcache.server.coalesce import Coalescer
from prismcache.server.completions import completions
from prismcache.server.metrics import ProxyMetrics
from prismcache.server.settings import ServerSettings
from prismcache.server.state import ProxyState, state_of
from prismcache.server.upstream import Upstream, pass_on_headers
from prismcache.server.wire import BodyTooLarge, error_response, json_response, read_body
from prismcache.stores import redact_url

__all__ = ["create_app"]

log = logging.getLogger("prismcache.server")


def create_app(cache: SemanticCache, settings: ServerSettings, *,
               transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """The proxy as an ASGI app over ``cache``, forwarding misses to ``settings.upstream``.

    The app does not own ``cache``: the caller closes it after the server stops. ``transport``
    replaces httpx's network transport (for tests that need no upstream server). Raises
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
                        connect_timeout=settings.connect_timeout, transport=transport)
    state = ProxyState(cache=cache, settings=settings, auth=Auth(settings), upstream=upstream,
                       metrics=ProxyMetrics(), coalescer=Coalescer())
    # Economics are always measured (GET /admin/economics); they disable a category only when
    # the config says auto_disable. Load-adaptive control runs when `adaptive:` is configured.
    state.economics = EconomicsTracker(EconomicsSettings.from_config(cache.config),
                                       cache.config.categories)
    adaptive = AdaptiveSettings.from_config(cache.config)
    state.adaptive = None if adaptive is None else AdaptivePolicy.from_settings(adaptive)
    cache.policy_hook = chain_hooks(cache.policy_hook, state.adaptive, state.economics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("prismcache: proxying to %s (%s mode)", redact_url(settings.upstream),
                 "pass-through" if settings.pass_through else "configured-tenants")
        try:
            yield
        finally:
            await upstream.aclose()

    routes = [
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", passthrough, methods=["POST"]),
        Route("/v1/models", passthrough, methods=["GET"]),
        Route("/v1/models/{model:path}", passthrough, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin_routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.prism = state
    return app


async def passthrough(request: Request) -> Response:
    """Forward ``/v1/embeddings`` and ``/v1/models`` unchanged (the tenant rules still apply:
    an unknown key gets a 401 in configured mode)."""
    state = state_of(request)
    endpoint = request.url.path.removeprefix("/v1/").split("/")[0]
    caller = state.auth.caller(request.headers)
    if caller is None:
        state.metrics.rejected.inc(endpoint, "unauthorized")
        return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
    body = None
    if request.method == "POST":
        try:
            body = await read_body(request, state.settings.max_body_bytes)
        except BodyTooLarge as exc:
            state.metrics.rejected.inc(endpoint, "bad_request")
            return error_response(400, str(exc), code="request_too_large")
    path = request.url.path.removeprefix("/v1")
    state.metrics.requests.inc(endpoint, caller.tenant, "", "bypass")
    try:
        reply = await state.upstream.request(
            request.method, path, body=body, authorization=caller.upstream_authorization,
            headers=pass_on_headers(request.headers))
    except UpstreamError as exc:
        status = exc.status or 502
        state.metrics.upstream_errors.inc(endpoint, str(status))
        return error_response(status, str(exc), type="upstream_error",
                              code="upstream_timeout" if status == 504 else "upstream_error")
    if reply.status >= 400:
        state.metrics.upstream_errors.inc(endpoint, str(reply.status))
    return Response(reply.body, status_code=reply.status,
                    headers={**reply.headers, "x-prism-cache": "bypass"},
                    media_type=reply.content_type)


async def healthz(request: Request) -> Response:
    """Liveness: the process serves HTTP. (It does not touch the store: a broken store is
    failed open, not a reason to restart the proxy.)"""
    state = state_of(request)
    return json_response({"status": "ok", "inflight": state.metrics.inflight,
                          "pid": os.getpid()})  # which worker of `serve --workers` answered


async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the proxy's metrics and the cache's size."""
    state = state_of(request)
    stats = await state.in_thread(state.cache.stats)
    text = state.metrics.render(stats)
    if state.adaptive is not None:
        text += "\n".join(state.adaptive.metric_lines(state.cache.config.categories)) + "\n"
    if state.economics is not None:
        text += "\n".join(state.economics.metric_lines()) + "\n"
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
