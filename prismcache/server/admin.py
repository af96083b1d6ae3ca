"""The admin API: ``GET /admin/stats``, ``POST /admin/invalidate``, ``POST /admin/feedback``.

Every admin call needs ``Authorization: Bearer <admin token>`` (the token is read from the
environment variable ``server.admin_token_env`` names). Without a configured token the admin
API does not exist: 404. A missing or wrong token: 401.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prismcache.errors import RequestError, StoreError
from prismcache.request import parse_json
from prismcache.server.metrics import Counter
from prismcache.server.overload import UpstreamGate
from prismcache.server.state import ProxyState, state_of
from prismcache.server.wire import (
    BodyTooLarge,
    error_response,
    format_entry_id,
    json_response,
    parse_entry_id,
    read_body,
)

__all__ = ["admin_routes"]

log = logging.getLogger("prismcache.server")
_FILTERS = ("tenant", "category", "model", "entry", "all")


def _denied(state: ProxyState, request: Request) -> Response | None:
    if not state.auth.admin_enabled:
        return error_response(404, "the admin API is disabled: set server.admin_token_env",
                              code="admin_disabled")
    if not state.auth.is_admin(request.headers):
        return error_response(401, "admin endpoints need Authorization: Bearer <admin token>",
                              type="authentication_error", code="invalid_admin_token")
    return None


async def _admin_json(request: Request) -> tuple[ProxyState, dict[str, Any]] | Response:
    """The state and the JSON object body of an admin call, or the response refusing it: 404
    or 401 from :func:`_denied` (checked before the body is read), 400 for a bad body."""
    state = state_of(request)
    if (denied := _denied(state, request)) is not None:
        return denied
    try:
        data = parse_json((await read_body(request, state.settings.max_body_bytes)) or b"{}")
    except (BodyTooLarge, RequestError) as exc:
        return error_response(400, f"the body must be a JSON object: {exc}")
    if not isinstance(data, dict):
        return error_response(400, "the body must be a JSON object")
    return state, data


async def stats(request: Request) -> Response:
    """Per-category cache counters and the proxy's own state."""
    state = state_of(request)
    if (denied := _denied(state, request)) is not None:
        return denied
    categories = await state.in_thread(state.cache.stats)
    return json_response({
        "categories": {name: {**asdict(s), "hit_rate": s.hit_rate}
                       for name, s in categories.items()},
        "proxy": {"inflight": state.metrics.inflight, "flights": len(state.coalescer),
                  "coalesced": state.coalescer.followers,
                  "tenants": list(state.auth.tenant_names),
                  "mode": "pass-through" if state.settings.pass_through else "configured",
                  "fallbacks": _by_kind(state.metrics.fallbacks),
                  "relief": _by_kind(state.metrics.relief),
                  "shed": {what: int(state.metrics.shed.value(what))
                           for what in ("lookup", "store")},
                  "load_admission": _load_admission(state),
                  "upstream_gate": (gate.stats() if isinstance(gate := state.coalescer.gate,
                                                                UpstreamGate) else None)},
        "index_budget": None if (budget := state.cache.index_budget) is None else asdict(budget),
        "embedder": _embedder_stats(state),
        "store_embeds": None if (ahead := state.embed_ahead) is None else {
            "batches": ahead.batches, "texts": ahead.texts, "failures": ahead.failures},
    })


def _embedder_stats(state: ProxyState) -> dict[str, Any] | None:
    """The batching embedder's counters (batch sizes, model time per text), ``None`` when
    the server does not batch."""
    stats = getattr(state.cache.embedder, "stats", None)
    return stats() if callable(stats) else None


def _by_kind(counter: Counter) -> dict[str, int]:
    """A near/stale answer counter's total by kind (its last label): ``fallbacks`` (answers
    in place of upstream errors) or ``relief`` (misses answered at once, without an upstream
    call, while it was saturated); neither are hits."""
    out = {"near": 0, "stale": 0}
    for labels, value in list(counter.values.items()):
        out[labels[-1]] = out.get(labels[-1], 0) + int(value)
    return out


def _load_admission(state: ProxyState) -> dict[str, Any] | None:
    admission = state.load_admission
    if admission is None:
        return None
    return {"overloaded": admission.overloaded, "skipped": dict(admission.skipped)}


async def invalidate(request: Request) -> Response:
    """Delete entries by ``tenant``/``category``/``model`` (all given must match), one
    ``entry`` (hex id), or everything with ``{"all": true}``. Answers ``{"deleted": n}``."""
    checked = await _admin_json(request)
    if isinstance(checked, Response):
        return checked
    state, data = checked
    unknown = set(data) - set(_FILTERS)
    if unknown:
        return error_response(400, f"unknown filters {sorted(unknown)}; known: {list(_FILTERS)}")
    filters: dict[str, Any] = {}
    for name in ("tenant", "category", "model"):
        if data.get(name) is not None:
            if not isinstance(data[name], str) or not data[name]:
                return error_response(400, f"{name} must be a non-empty string", param=name)
            filters[name] = data[name]
    if "category" in filters and filters["category"] not in state.cache.config.categories:
        return error_response(400, f"unknown category {filters['category']!r}; known: "
                                   f"{sorted(state.cache.config.categories)}", param="category")
    if data.get("entry") is not None:
        try:
            filters["entry_id"] = parse_entry_id(data["entry"])
        except ValueError as exc:
            return error_response(400, str(exc), param="entry")
    if not filters and data.get("all") is not True:
        return error_response(400, "name a tenant, category, model or entry, "
                                   "or send {\"all\": true} to delete everything")
    try:
        deleted = await state.in_thread(lambda: state.cache.invalidate(**filters))
    except StoreError as exc:
        log.warning("invalidate failed: %s", exc)
        return error_response(503, f"the store failed: {type(exc).__name__}", type="server_error")
    log.info("admin invalidated %d entries (%s)", deleted, sorted(filters) or "all")
    return json_response({"deleted": deleted})


async def feedback(request: Request) -> Response:
    """A client's verdict on a served hit, named by ``entry`` (``X-Prism-Entry``) or
    ``response`` (the served body's ``id``). ``{"entry": ..., "reason": "..."}`` (or
    ``"correct": false``) reports it wrong: the entry is removed and a false hit counted.
    ``"correct": true`` reports it right: the entry stays. Either way, when the proxy still
    remembers the hit (its query and the verifier's probability), a ``feedback`` label is
    recorded (:mod:`prismcache.labels`). Answers what was done, with ``"labelled"``."""
    checked = await _admin_json(request)
    if isinstance(checked, Response):
        return checked
    state, data = checked
    correct = data.get("correct", False)
    if not isinstance(correct, bool):
        return error_response(400, "correct must be true or false", param="correct")
    remembered = None
    if data.get("entry") is None and isinstance(data.get("response"), str):
        remembered = state.recent_hits.find(response_id=data["response"])
        if remembered is None:
            return error_response(404, f"no recent hit answered with {data['response']!r}",
                                  param="response", code="response_not_found")
        entry_id = remembered.entry_id
    else:
        try:
            entry_id = parse_entry_id(data.get("entry"))
        except ValueError as exc:
            return error_response(400, str(exc), param="entry")
        remembered = state.recent_hits.find(entry_id=entry_id)
    store = state.cache.document_store
    try:
        entry = await state.in_thread(store.get, entry_id)
        if entry is None:
            return error_response(404, f"no entry {format_entry_id(entry_id)}",
                                  param="entry", code="entry_not_found")
        label = None
        if remembered is not None and remembered.tenant == entry.tenant:
            label = remembered.label(entry.query, correct)
            calibrator = state.cache.policies.calibration
            await state.in_thread(calibrator.record if calibrator else store.add_label, label)
        if not correct:
            await state.in_thread(lambda: state.cache.invalidate(entry_id=entry_id))
    except StoreError as exc:
        log.warning("feedback failed: %s", exc)
        return error_response(503, f"the store failed: {type(exc).__name__}", type="server_error")
    if not correct:
        state.metrics.false_hits.inc(entry.tenant, entry.category)
    log.info("%s hit reported on entry %s (%s)", "right" if correct else "false",
             format_entry_id(entry_id), entry.category)
    return json_response({"removed": not correct, "entry": format_entry_id(entry_id),
                          "tenant": entry.tenant, "category": entry.category,
                          "labelled": label is not None})


async def economics(request: Request) -> Response:
    """Per-category economics over the configured window: hit rate, break-even, net saving
    (seconds and USD per request and per hour), flagged/disabled, shadow counts."""
    state = state_of(request)
    if (denied := _denied(state, request)) is not None:
        return denied
    tracker = state.economics
    body = tracker.as_json() if tracker is not None else {"categories": []}
    if (calibrator := state.cache.policies.calibration) is not None:
        body["calibration"] = calibrator.as_json()
    if state.adaptive is not None:
        control = state.adaptive.controller
        body["load"] = {m: control.level(m) for m in control.signals.models()}
    return json_response(body)


def admin_routes() -> list[Route]:
    """The admin API's routes."""
    return [Route("/admin/stats", stats, methods=["GET"]),
            Route("/admin/economics", economics, methods=["GET"]),
            Route("/admin/invalidate", invalidate, methods=["POST"]),
            Route("/admin/feedback", feedback, methods=["POST"])]
