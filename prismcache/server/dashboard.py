"""The operator's dashboard: ``GET /dashboard`` and the admin JSON it polls.

The page (``prismcache/server/static/``: one HTML file, one stylesheet, one script, no build
step, nothing fetched from elsewhere) is served to anyone who asks while the admin API is
enabled, and holds no data: it asks for the admin token, keeps it in the tab's
``sessionStorage`` (never in a URL), and calls these endpoints with
``Authorization: Bearer <admin token>``, under the admin API's rules (404 without a configured
token, 401 with a wrong one):

* ``GET /admin/dashboard``: per category the cache's counters (as ``GET /admin/stats``), the
  policy configured and the policy in force (after load-adaptive control and economics), quota
  use, wrong-hit reports, money saved, the economics table, load levels, tenants and models;
* ``GET /admin/timeline?since=<t>``: the samples of :mod:`prismcache.server.timeline` taken
  after ``t`` (the whole last hour for ``since=0``);
* ``POST /admin/explain``: ``{"query", "tenant", "model"?, "category"?}`` -> the nearest entries
  in that tenant's partition, their similarity, the decision and why.

A :class:`Sampler` task, started with the app, reads the counters every ``interval`` seconds
into its :class:`~prismcache.server.timeline.Timeline` (the app keeps it as
``app.state.prism_sampler``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict
from enum import Enum
from functools import cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prismcache.config import format_duration
from prismcache.errors import RequestError
from prismcache.results import Hit
from prismcache.server.admin import _admin_json, _denied
from prismcache.server.state import ProxyState, state_of
from prismcache.server.timeline import Reading, Timeline
from prismcache.server.wire import error_response, format_entry_id, json_response

__all__ = ["Sampler", "dashboard_routes", "snapshot"]

log = logging.getLogger("prismcache.server")
_ASSETS = {"dashboard.css": "text/css; charset=utf-8",
           "dashboard.js": "text/javascript; charset=utf-8",
           "favicon.svg": "image/svg+xml"}
# The page loads only its own files and talks only to its own origin.
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class Sampler:
    """Reads the proxy's counters into ``timeline`` every ``interval`` seconds, on the event
    loop (the cache's counters are read on a worker thread, as every admin call does)."""

    def __init__(self, state: ProxyState, timeline: Timeline, interval: float = 5.0) -> None:
        """A stopped sampler; raises ``ValueError`` unless ``interval > 0``."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.state, self.timeline, self.interval = state, timeline, interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling (call on the running event loop; a second call does nothing)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sample(self) -> None:
        """Take one reading now."""
        state = self.state
        stats = await state.in_thread(state.cache.stats)
        overhead = state.metrics.miss_overhead_seconds
        totals = [0.0] * (len(overhead.buckets) + 1)
        for series in overhead.series.values():
            for i, n in enumerate(series[:len(overhead.buckets)]):
                totals[i] += n
            totals[-1] += series[-1]
        self.timeline.record(Reading(
            now=time.time(),
            categories={c: (s.lookups, s.hits, s.exact_hits) for c, s in stats.items()},
            overhead=totals, bounds=overhead.buckets, levels=_levels(state)))

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # noqa: BLE001 - one bad reading must not end the history
                log.exception("prismcache: dashboard sample failed; sampling goes on")
            await asyncio.sleep(self.interval)


def dashboard_routes() -> list[Route]:
    """The dashboard's page, its assets, and its admin JSON endpoints."""
    return [Route("/dashboard", page, methods=["GET"]),
            Route("/dashboard/static/{name}", asset, methods=["GET"]),
            Route("/admin/dashboard", dashboard_json, methods=["GET"]),
            Route("/admin/timeline", timeline_json, methods=["GET"]),
            Route("/admin/explain", explain, methods=["POST"])]


async def page(request: Request) -> Response:
    """The dashboard's HTML (404 while the admin API is disabled)."""
    state = state_of(request)
    if not state.auth.admin_enabled:
        return error_response(404, "the dashboard needs the admin API: set "
                                   "server.admin_token_env", code="admin_disabled")
    return Response(_read("dashboard.html"), media_type="text/html; charset=utf-8",
                    headers=_PAGE_HEADERS)


async def asset(request: Request) -> Response:
    """One of the page's own files, by name (anything else: 404)."""
    name = request.path_params["name"]
    if name not in _ASSETS:
        return error_response(404, f"no asset {name!r}", code="not_found")
    return Response(_read(name), media_type=_ASSETS[name], headers=_PAGE_HEADERS)


async def dashboard_json(request: Request) -> Response:
    """Everything the page shows except the charts (see :func:`snapshot`)."""
    state = state_of(request)
    if (denied := _denied(state, request)) is not None:
        return denied
    stats = await state.in_thread(state.cache.stats)
    return json_response(snapshot(state, stats))


async def timeline_json(request: Request) -> Response:
    """The timeline's samples after ``?since=`` (seconds since the epoch; default 0)."""
    state = state_of(request)
    if (denied := _denied(state, request)) is not None:
        return denied
    try:
        since = float(request.query_params.get("since", "0"))
    except ValueError:
        return error_response(400, "since must be a number of seconds", param="since")
    sampler: Sampler | None = getattr(request.app.state, "prism_sampler", None)
    samples = [] if sampler is None else sampler.timeline.since(since)
    return json_response({"interval_s": None if sampler is None else sampler.interval,
                          "samples": [s.as_json() for s in samples]})


async def explain(request: Request) -> Response:
    """Why a query would hit or miss: ``{"query": str, "tenant": str, "model": str?,
    "category": str?}`` -> the decision, its reason, and the nearest entries of that tenant's
    partition with their similarity and outcome. Nothing is stored or served."""
    checked = await _admin_json(request)
    if isinstance(checked, Response):
        return checked
    state, data = checked
    query, tenant = data.get("query"), data.get("tenant") or "default"
    model, category = data.get("model") or "default", data.get("category") or None
    for name, value in (("query", query), ("tenant", tenant), ("model", model)):
        if not isinstance(value, str) or not value.strip():
            return error_response(400, f"{name} must be a non-empty string", param=name)
    if category is not None and category not in state.cache.config.categories:
        return error_response(400, f"unknown category {category!r}; known: "
                                   f"{sorted(state.cache.config.categories)}", param="category")
    body = {"model": model, "messages": [{"role": "user", "content": query}]}
    try:
        answer = await state.in_thread(_explain, state, body, tenant, category)
    except RequestError as exc:
        return error_response(400, str(exc))
    answer.update(tenant=tenant, model=model, query=query)
    return json_response(answer)


def snapshot(state: ProxyState, stats: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's data: ``stats`` (:meth:`SemanticCache.stats`) per category with the
    policy configured and in force, quota use, proxy counters, and the economics."""
    cache, metrics = state.cache, state.metrics
    economics = {row.category: row for row in state.economics.table()} \
        if state.economics is not None else {}
    requests: dict[str, dict[str, float]] = {}
    tenants = set(state.auth.tenant_names)
    for (_, tenant, name, outcome), n in metrics.requests.values.items():
        tenants.add(tenant)
        requests.setdefault(name, {}).setdefault(outcome, 0.0)
        requests[name][outcome] += n
    wrong = _by_category(metrics.false_hits.values)
    usd = _by_category(metrics.usd_saved.values)
    tokens = _by_category(metrics.tokens_saved.values)
    categories = []
    for name in sorted(set(cache.config.categories) | set(stats)):
        s = stats.get(name)
        configured, in_force = cache.config.policy(name), cache.policy_for(name, "")
        row = economics.get(name)
        quota_entries = max(1, int(configured.quota * cache.config.capacity_entries))
        quota_bytes = (None if cache.config.capacity_bytes is None
                       else int(configured.quota * cache.config.capacity_bytes))
        counted = requests.get(name, {})
        saved_s = None
        if row is not None and s is not None:
            saved_s = s.hits * max(0.0, row.upstream_s - row.hit_s)
        categories.append({
            "category": name,
            "stats": {**asdict(s), "hit_rate": s.hit_rate} if s is not None else None,
            "requests": {k: int(counted.get(k, 0)) for k in ("hit", "miss", "bypass")},
            "wrong_hits": int(wrong.get(name, 0)),
            "usd_saved": usd.get(name, 0.0),
            "tokens_saved": int(tokens.get(name, 0)),
            "seconds_saved": saved_s,
            "policy": _policy(configured),
            "in_force": _policy(in_force),
            "quota": {"share": configured.quota, "entries": quota_entries, "bytes": quota_bytes,
                      "use": None if s is None else max(
                          s.entries / quota_entries,
                          s.bytes / quota_bytes if quota_bytes else 0.0)},
            "economics": asdict(row) if row is not None else None,
        })
    load = _levels(state)
    return {
        "categories": categories,
        "load": load,
        "load_level": max(load.values(), default=0.0),
        "adaptive": state.adaptive is not None,
        "economics_window_s": state.economics.settings.window if state.economics else None,
        "tenants": sorted(tenants),
        "models": sorted(load),
        "proxy": {"inflight": metrics.inflight, "flights": len(state.coalescer),
                  "coalesced": state.coalescer.followers,
                  "mode": "pass-through" if state.settings.pass_through else "configured",
                  "capacity_entries": cache.config.capacity_entries,
                  "capacity_bytes": cache.config.capacity_bytes},
    }


def _explain(state: ProxyState, body: dict[str, Any], tenant: str, category: str | None
             ) -> dict[str, Any]:
    report = state.cache.explain(body, tenant=tenant, category=category)
    result = report.result
    hit = isinstance(result, Hit)
    policy = getattr(report, "policy", None)
    candidates = [{
        "entry": format_entry_id(c.entry_id),
        "query": getattr(c, "query", None),
        "similarity": getattr(c, "similarity", None),
        "probability": getattr(c, "probability", None),
        "outcome": _text(getattr(c, "outcome", None)),
        "detail": _text(getattr(c, "detail", None)),
    } for c in getattr(report, "candidates", None) or ()]
    return {
        "decision": "hit" if hit else "miss",
        "tier": getattr(result, "tier", None) if hit else None,
        "entry": format_entry_id(result.entry_id) if isinstance(result, Hit) else None,
        "reason": None if hit else _text(getattr(result, "reason", None)),
        "detail": _text(getattr(result, "detail", None)) or None,
        "similarity": getattr(result, "similarity", None),
        "probability": getattr(result, "probability", None),
        "category": getattr(report, "category", None),
        "threshold": getattr(policy, "threshold", None),
        "verifier": _text(getattr(policy, "verifier", None)),
        "verify_band": [getattr(policy, "verify_low", None), getattr(policy, "verify_high", None)],
        "cutoff": getattr(policy, "cutoff", None),
        "guards": list(getattr(policy, "guards", ()) or ()),
        "candidates": candidates,
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.value) if isinstance(value, Enum) else str(value)


def _policy(policy: Any) -> dict[str, Any]:
    ttl = policy.ttl
    return {"enabled": policy.enabled, "threshold": policy.threshold,
            "ttl_s": None if ttl is None else ttl.total_seconds(),
            "ttl": format_duration(ttl), "exact_only": policy.exact_only,
            "eviction": policy.eviction, "guards": list(policy.guards)}


def _by_category(values: dict[tuple[str, ...], float]) -> dict[str, float]:
    """Sum a ``(tenant, category)`` counter over tenants."""
    out: dict[str, float] = {}
    for (_, name), n in values.items():
        out[name] = out.get(name, 0.0) + n
    return out


def _levels(state: ProxyState) -> dict[str, float]:
    if state.adaptive is None:
        return {}
    control = state.adaptive.controller
    return {m: control.level(m) for m in control.signals.models()}


@cache
def _read(name: str) -> bytes:
    return resources.files("prismcache.server").joinpath("static", name).read_bytes()
