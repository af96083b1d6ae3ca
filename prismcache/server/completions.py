"""The cached endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

One request's way: authenticate -> read and validate the body (400 on anything the cache
cannot key) -> look up (unless ``Cache-Control: no-cache`` or the request bypasses the
cache) -> on a hit, answer from the entry (JSON, or a replayed stream) -> on a miss, join or
start the flight for this request (:mod:`prismcache.server.coalesce`), which calls the
upstream and feeds every identical waiting request -> once a 200 answer is complete and
released, :func:`_after_reply` observes and stores it off the response path
(:mod:`prismcache.server.background`); an identical request arriving meanwhile waits for that
store before its lookup, so it hits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Hashable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from prismcache.cache import PendingLookup
from prismcache.errors import RequestError, UpstreamError
from prismcache.request import PreparedRequest, RequestKey, key_request, parse_body
from prismcache.responses import completion_tokens, uncacheable_reason
from prismcache.results import Hit, Miss, MissReason
from prismcache.server import learning, overload
from prismcache.server.auth import Caller
from prismcache.server.coalesce import Flight, Head, Similar, similar_for
from prismcache.server.settings import ServerSettings
from prismcache.server.sse import DONE, encode_event, iter_events, replay
from prismcache.server.state import ProxyState, state_of
from prismcache.server.upstream import iter_lines, pass_back_headers, pass_on_headers, read_all
from prismcache.server.wire import (
    HEADER_CATEGORY,
    BodyTooLarge,
    CacheControl,
    error_body,
    error_response,
    json_response,
    prism_headers,
    read_body,
)
from prismcache.streams import StreamRecord, completion_of

__all__ = ["completions"]

log = logging.getLogger("prismcache.server")
_FIELD = {"chat": "messages", "completions": "prompt"}
_SHADOW = (MissReason.SHADOW_HIT, MissReason.SHADOW_MISS)
_UNEMBEDDED = (MissReason.FAR, MissReason.BUSY)  # lookups that left the query unembedded


@dataclass(frozen=True, slots=True)
class _Call:
    """One validated request, as the flight that answers it needs it."""

    endpoint: str  # "chat" | "completions"
    path: str  # upstream path, e.g. "/chat/completions"
    raw: bytes
    body: Mapping[str, Any]
    key: RequestKey
    caller: Caller
    category: str | None  # explicit (X-Prism-Category)
    label: str  # the category metrics are labelled with
    stream: bool
    store: bool
    pass_on: dict[str, str]
    shadow: bool = False  # a shadow-mode lookup of a category the economics disabled
    busy: bool = False  # its lookup was skipped (reason busy): its store must embed
    unembedded: bool = False  # its lookup did not embed it (far, busy, none): its store must
    probe: learning.Probe | None = None  # a near candidate the fresh answer labels

    @property
    def prepared(self) -> PreparedRequest:
        """The request as parsed and keyed here, handed to the cache as it is."""
        return PreparedRequest(self.body, self.key)

    @property
    def wants_usage(self) -> bool:
        """The client asked for a usage chunk at the end of its stream."""
        options = self.body.get("stream_options")
        return isinstance(options, Mapping) and options.get("include_usage") is True

    def upstream_body(self, settings: ServerSettings) -> bytes:
        """The body to send upstream: the client's, except that a stream the proxy records
        asks for ``include_usage`` (so the entry, served later to a non-streaming client,
        has ``usage``); the usage chunk is passed on only to clients that asked for it."""
        if not (self.stream and self.store and settings.stream_usage) or self.wants_usage:
            return self.raw
        options = self.body.get("stream_options")
        options = {**options} if isinstance(options, Mapping) else {}
        body = {**self.body, "stream_options": {**options, "include_usage": True}}
        return json.dumps(body, ensure_ascii=False).encode("utf-8")


async def completions(request: Request) -> Response:
    """Serve one chat-completions or completions request from the cache or the upstream."""
    started = time.perf_counter()
    state = state_of(request)
    # the routed path as uvicorn parsed it (request.url would build a URL object per request)
    endpoint = "chat" if request.scope["path"].endswith("/chat/completions") else "completions"
    call = await _validate(state, request, endpoint)
    if isinstance(call, Response):
        return call
    result: Hit | Miss | None = None
    if call.key.bypass:
        result = Miss(reason=MissReason.BYPASS, detail=call.key.bypass, cacheable=False)
    elif not CacheControl.parse(request.headers.get("cache-control")).no_cache:
        # its own answer, being stored (a batch of stores' embeddings is sent at once)
        ahead = state.embed_ahead
        await state.after_reply.settled(call.key.exact_key,
                                        hurry=ahead.hurry if ahead is not None else None)
        result = await _lookup(state, call)
        probe = learning.probe_for(state, result, tenant=call.caller.tenant,
                                   query=call.key.query, model=call.key.model)
        if isinstance(result, Hit) and probe is None:
            return _serve_hit(state, call, result, started)
        if isinstance(result, Hit):  # explored: forwarded and labelled, not served
            result = Miss(reason=MissReason.EXPLORED, category=result.category,
                          similarity=result.similarity)
        call = replace(call, probe=probe)
    cacheable = result is None or result.cacheable
    outcome = "miss" if cacheable else "bypass"
    label = call.category or (result.category if result else None) or "unknown"
    state.metrics.requests.inc(endpoint, call.caller.tenant, label, outcome)
    call = replace(call, store=call.store and cacheable, label=label,
                   shadow=isinstance(result, Miss) and result.reason in _SHADOW,
                   busy=isinstance(result, Miss) and result.reason is MissReason.BUSY,
                   unembedded=result is None or (isinstance(result, Miss)
                                                 and result.reason in _UNEMBEDDED))
    similar = None
    if state.settings.coalesce_similar:
        policy = state.cache.policy_for(label, call.key.model)
        similar = similar_for(result, call.key, policy,
                              (call.endpoint, call.stream, call.store, call.wants_usage),
                              state.cache.verifier_for(policy), state.cache.config.neighbours)
    if call.probe is None and not call.shadow and (relief := await overload.relieve(
            state, endpoint=endpoint, key=call.key, body=call.body, stream=call.stream,
            result=result, leads=partial(_leads, state, call, similar))):
        return relief  # the upstream is saturated: a stale/near answer, no upstream call
    response = await _serve_flight(state, call, prism_headers(result, state=outcome), started,
                                   similar)
    return await overload.fallback(state, endpoint=endpoint, key=call.key, body=call.body,
                                   stream=call.stream, result=result, response=response) or response


async def _validate(state: ProxyState, request: Request, endpoint: str) -> _Call | Response:
    metrics = state.metrics
    caller = state.auth.caller(request.headers)
    if caller is None:
        metrics.rejected.inc(endpoint, "unauthorized")
        return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
    try:
        raw = await read_body(request, state.settings.max_body_bytes)
        body = parse_body(raw)
        field = _FIELD[endpoint]
        if field not in body:
            raise RequestError(f"'{field}' is a required property")
        stream = body.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise RequestError("'stream' must be a boolean")
        key = key_request(body, tenant=caller.tenant, limits=state.cache.config.limits)
    except (BodyTooLarge, RequestError) as exc:
        metrics.rejected.inc(endpoint, "bad_request")
        code = "request_too_large" if isinstance(exc, BodyTooLarge) else None
        return error_response(400, str(exc), code=code)
    category = request.headers.get(HEADER_CATEGORY) or None
    known = state.cache.config.categories
    metadata = body.get("metadata")
    named = (metadata.get("prism_category") or None) if isinstance(metadata, Mapping) else None
    for value, where in ((category, "X-Prism-Category"), (named, "metadata.prism_category")):
        if value is not None and (not isinstance(value, str) or value not in known):
            metrics.rejected.inc(endpoint, "bad_request")
            return error_response(400, f"unknown category {value!r} in {where}; "
                                       f"known: {sorted(known)}", param=where)
    no_store = CacheControl.parse(request.headers.get("cache-control")).no_store
    return _Call(endpoint=endpoint, path=request.scope["path"].removeprefix("/v1"), raw=raw,
                 body=body, key=key, caller=caller, category=category, label=category or "unknown",
                 stream=bool(stream),
                 store=not no_store and not key.bypass, pass_on=pass_on_headers(request.headers))


async def _lookup(state: ProxyState, call: _Call) -> Hit | Miss:
    """Look ``call`` up: the exact tier on the event loop when the store reads locally (a
    dict lookup and, on a hit, one read: cheaper than a hop to a thread), the rest of the
    lookup on a thread (the whole of it, for a store read over the network), unless the
    embedder's backlog is over budget: then a ``busy`` miss, counted, without the rest."""
    cache = state.cache
    if state.settings.lookup_inline:
        result = _whole_lookup(state, call)
    elif cache.reads_local:
        first = cache.lookup_exact(call.prepared, tenant=call.caller.tenant,
                                   category=call.category)
        if isinstance(first, PendingLookup):
            result = _busy(state, first) or await state.in_thread(_rest_lookup, state, call,
                                                                   first)
        else:
            result = _judged(state, call, first)
    else:
        result = await state.in_thread(_whole_lookup, state, call)
    if isinstance(result, Miss) and result.reason is MissReason.BUSY:
        state.metrics.shed.inc("lookup")
        return result
    if isinstance(result, Miss) and result.reason is MissReason.ERROR:
        state.metrics.cache_errors.inc("lookup")
        log.warning("lookup failed open (%s); serving from upstream", result.label)
    if isinstance(result, Hit) and result.tier == "semantic":
        state.budget.looked_up(hit=True)  # a lookup past the exact tier: worth its wait?
    elif isinstance(result, Miss) and result.cacheable:
        state.budget.looked_up(hit=False)
    return result


def _whole_lookup(state: ProxyState, call: _Call) -> Hit | Miss:
    """Both phases of the lookup in turn, on the caller's thread."""
    first = state.cache.lookup_exact(call.prepared, tenant=call.caller.tenant,
                                     category=call.category)
    if isinstance(first, PendingLookup):
        return _busy(state, first) or _rest_lookup(state, call, first)
    return _judged(state, call, first)


def _busy(state: ProxyState, pending: PendingLookup) -> Miss | None:
    """``pending``'s ``busy`` miss when :func:`_over_budget`."""
    return pending.busy() if _over_budget(state) else None


def _over_budget(state: ProxyState) -> bool:
    """Whether an embedding asked for now would wait past the lookup budget
    (:class:`~prismcache.server.budget.LookupBudget`) behind the model work queued
    (``BatchingEmbedder.backlog``)."""
    backlog = getattr(state.cache.embedder, "backlog", None)
    return backlog is not None and state.budget.skip(backlog())


def _rest_lookup(state: ProxyState, call: _Call, pending: PendingLookup) -> Hit | Miss:
    return _judged(state, call, state.cache.lookup_rest(pending))


def _judged(state: ProxyState, call: _Call, result: Hit | Miss) -> Hit | Miss:
    """``result`` as the economics make it (the proxy times hits and misses end to end
    itself); may run a shadow lookup, so off the event loop unless ``result`` is final."""
    if state.economics is None:
        return result
    return state.economics.judge(state.cache, call.prepared, result,
                                 tenant=call.caller.tenant, category=call.category)


def _serve_hit(state: ProxyState, call: _Call, hit: Hit, started: float) -> Response:
    response = completion_of(hit.response, hit.chunks)
    headers = prism_headers(hit, state="hit")
    if call.stream:
        out = Response(b"".join(replay(response, hit.chunks, include_usage=call.wants_usage)),
                       headers=headers, media_type="text/event-stream")
    else:
        out = json_response(response, headers=headers)
    metrics, tenant = state.metrics, call.caller.tenant
    state.recent_hits.remember(hit, tenant=tenant, query=call.key.query)
    tokens = completion_tokens(response)
    metrics.requests.inc(call.endpoint, tenant, hit.category, "hit")
    metrics.tokens_saved.inc(tenant, hit.category, by=tokens)
    price = state.cache.config.policy(hit.category).price_per_1k_tokens
    metrics.usd_saved.inc(tenant, hit.category, by=tokens / 1000 * price)
    metrics.hit_seconds.observe(time.perf_counter() - started, tenant, hit.category)
    if state.economics is not None:
        state.economics.record_hit_time(hit.category, time.perf_counter() - started)
    return out


async def _serve_flight(state: ProxyState, call: _Call, headers: dict[str, str],
                        started: float, similar: Similar | None = None) -> Response:
    coalescer = state.coalescer
    key = _flight_key(state, call)
    flight, leader = coalescer.join(key, partial(_forward, state, call),
                                    similar if key is not None else None)
    if not leader:  # identical (similarity 1) or similar: either way no call of its own
        state.metrics.coalesced.inc(call.endpoint)
        score = coalescer.similarity(flight, key, similar)
        headers = {**headers, "x-prism-cache": "coalesced",
                   "x-prism-similarity": f"{1.0 if score is None else score:.4f}"}
    state.metrics.inflight += 1
    done = False
    try:
        head = await flight.wait_head()
        if isinstance(head, overload.Shed):  # the gate did not send it: the proxy's 429
            return overload.shed_response(head, headers)
        if isinstance(head, UpstreamError):
            status = head.status or 502
            return error_response(status, str(head), type="upstream_error",
                                  code="upstream_timeout" if status == 504 else "upstream_error",
                                  headers=headers)
        headers = {**head.headers, **headers}
        if head.streaming:
            done = True  # the stream's generator leaves the flight when it ends
            return StreamingResponse(
                _relay(state, flight, leader, started, call), status_code=head.status,
                headers=headers, media_type="text/event-stream")
        body = await flight.body()
        if leader:
            _overhead(state, flight, started, call)
        return Response(body, status_code=head.status, headers=headers,
                        media_type=head.content_type)
    finally:
        if not done:
            state.metrics.inflight -= 1
            coalescer.leave(flight)


def _flight_key(state: ProxyState, call: _Call) -> Hashable | None:
    """The key identical requests share a flight under (``None``: never shared)."""
    if state.settings.coalesce and not call.key.bypass:
        return call.endpoint, call.key.exact_key, call.stream, call.store, call.wants_usage
    return None


def _leads(state: ProxyState, call: _Call, similar: Similar | None) -> bool:
    """Whether ``call`` would start a new upstream call: no flight would take it."""
    key = _flight_key(state, call)
    return state.coalescer.find(key, similar if key is not None else None) is None


async def _relay(state: ProxyState, flight: Flight, leader: bool, started: float,
                 call: _Call) -> AsyncIterator[bytes]:
    try:
        async for piece in flight.pieces():
            yield piece
        if leader:
            _overhead(state, flight, started, call)
    finally:  # also on a client hanging up: the flight is cancelled if nobody else reads it
        state.metrics.inflight -= 1
        state.coalescer.leave(flight)


def _overhead(state: ProxyState, flight: Flight, started: float, call: _Call) -> None:
    spent = time.perf_counter() - started - flight.upstream_seconds
    state.metrics.miss_overhead_seconds.observe(max(0.0, spent), call.caller.tenant, call.label)
    if state.economics is not None and call.label != "unknown":
        state.economics.record_overhead(call.label, max(0.0, spent))


async def _forward(state: ProxyState, call: _Call, flight: Flight) -> None:
    """The flight's runner: call the upstream, publish the answer, store it if complete."""
    upstream, metrics = state.upstream, state.metrics
    auth = call.caller.upstream_authorization
    load = _Load(state, state.metrics.models(call.key.model))
    t0 = time.perf_counter()
    try:
        if not call.stream:
            reply = await upstream.request("POST", call.path, body=call.raw,
                                           authorization=auth, headers=call.pass_on)
            flight.upstream_seconds = time.perf_counter() - t0
            load.answered(reply.status, flight.upstream_seconds)
            if reply.status == 200:  # registered before the body is released
                _release(state, call, flight, reply.body, None)
            else:
                _observe_upstream(state, call, flight, reply.status)
            flight.set_head(Head(reply.status, reply.headers, reply.content_type))
            flight.publish(reply.body)
            return
        async with upstream.stream(call.path, body=call.upstream_body(state.settings),
                                   authorization=auth,
                                   headers=call.pass_on) as response:
            load.answered(response.status_code, time.perf_counter() - t0)  # ~ time to 1st token
            if response.status_code != 200:
                body = await read_all(response, call.path)
                flight.upstream_seconds = time.perf_counter() - t0
                _observe_upstream(state, call, flight, response.status_code)
                flight.set_head(Head(response.status_code, pass_back_headers(response.headers),
                                     response.headers.get("content-type", "application/json")))
                flight.publish(body)
                return
            flight.set_head(Head(200, {}, "text/event-stream", streaming=True))
            await _relay_stream(state, call, flight, response, t0)
    except UpstreamError as exc:
        flight.upstream_seconds = time.perf_counter() - t0
        load.answered(exc.status or 502, flight.upstream_seconds)
        metrics.upstream_errors.inc(call.endpoint, str(exc.status or 502))
        raise
    finally:
        load.answered(0, time.perf_counter() - t0)  # cancelled: leave in-flight, no sample


class _Load:
    """Reports one upstream call to the load controller exactly once."""

    def __init__(self, state: ProxyState, model: str) -> None:
        self._signals = state.adaptive.controller.signals if state.adaptive else None
        self._model, self._open = model, self._signals is not None
        if self._signals is not None:
            self._signals.started(model)

    def answered(self, status: int, seconds: float) -> None:
        if self._open and self._signals is not None:
            self._open = False
            if status:
                self._signals.finished(self._model, seconds, status)
            else:
                self._signals.cancelled(self._model)


async def _relay_stream(state: ProxyState, call: _Call, flight: Flight, response: Any,
                        t0: float) -> None:
    record = StreamRecord()
    try:
        async for data in iter_events(iter_lines(response, call.path)):
            if data.strip() == "[DONE]":
                record.finish()
                break
            chunk = record.add(data)
            if chunk is not None and not chunk.get("choices") and chunk.get("usage") \
                    and not call.wants_usage:
                continue  # asked for the entry's sake: the client did not want it
            flight.publish(encode_event(data))
    except UpstreamError as exc:  # the stream broke off: tell the client, store nothing
        flight.upstream_seconds = time.perf_counter() - t0
        state.metrics.upstream_errors.inc(call.endpoint, str(exc.status or 502))
        flight.publish(encode_event(error_body(str(exc), type="upstream_error")))
        return
    flight.upstream_seconds = time.perf_counter() - t0
    _release(state, call, flight, record.answer(), record.chunks)
    if record.complete:  # after the store is registered: a request after [DONE] waits for it
        flight.publish(DONE)


def _observe_upstream(state: ProxyState, call: _Call, flight: Flight, status: int,
                      answer: Any = None) -> None:
    state.metrics.upstream_seconds.observe(flight.upstream_seconds, call.caller.tenant,
                                           call.label)
    if status == 200:
        state.budget.upstream_took(flight.upstream_seconds)
    if status >= 400:
        state.metrics.upstream_errors.inc(call.endpoint, str(status))
    elif state.economics is not None and call.label != "unknown":
        usd = None
        if isinstance(answer, dict) and completion_tokens(answer):
            price = state.cache.config.policy(call.label).price_per_1k_tokens
            usd = completion_tokens(answer) / 1000 * price
        state.economics.record_upstream(call.label, flight.upstream_seconds, usd)


def _release(state: ProxyState, call: _Call, flight: Flight, answer: Any,
             chunks: list[dict[str, Any]] | None) -> None:
    """Hand a fresh 200 answer (parsed, or the raw JSON body) to :func:`_after_reply`, run in
    the background; the store is registered under the exact key before this returns, or,
    with ``server.store_queue`` stores pending, dropped (counted, logged at debug)."""
    key = call.key.exact_key if call.store else None
    if not state.after_reply.run(key, _after_reply(state, call, flight, answer, chunks),
                                 partial(_after_reply_failed, state, call)):
        _dropped(state, "answer")
    elif key is not None:  # joinable until stored: a lookup that ran before it lands follows
        flight.settled = partial(state.after_reply.settled, key)


def _dropped(state: ProxyState, what: str) -> None:
    state.metrics.shed.inc("store")
    log.debug("%s not stored: %d stores pending after replies (server.store_queue)", what,
              len(state.after_reply))


async def _after_reply(state: ProxyState, call: _Call, flight: Flight, answer: Any,
                       chunks: list[dict[str, Any]] | None) -> None:
    """Runs once per fresh 200 answer from the upstream, after it is complete and released
    to the client(s), off the response path: observe it (metrics, economics), then store it
    when the request may be stored. ``answer`` is the completion (a stream's assembled
    answer, ``None`` when it could not be assembled) or a JSON answer's raw body, parsed
    here. The hook point for any further work on a fresh answer."""
    if isinstance(answer, bytes):
        try:
            answer = json.loads(answer)
        except ValueError:
            answer = None
    _observe_upstream(state, call, flight, 200, answer)
    # a grey-zone request: label the candidate from this answer, as work of its own (no
    # identical request waits for a label)
    if call.probe is not None and not state.after_reply.run(
            None, learning.record(state, call.probe, answer),
            partial(learning.label_failed, state)):
        _dropped(state, "label")
    if call.store and (answer is not None or not call.stream):  # a JSON 'None' is refused
        await _store(state, call, answer, chunks, flight.upstream_seconds)


def _after_reply_failed(state: ProxyState, call: _Call, exc: BaseException) -> None:
    state.metrics.stores.inc(call.label, "error")
    state.metrics.cache_errors.inc("store")


async def _store(state: ProxyState, call: _Call, answer: Any,
                 chunks: list[dict[str, Any]] | None, latency: float) -> None:
    metrics = state.metrics
    if not isinstance(answer, dict):
        metrics.stores.inc(call.label, "refused")
        return
    if call.busy and _over_budget(state):  # its embedding would only feed the queue it skipped
        _dropped(state, "answer")
        return
    allow_truncated = state.settings.cache_truncated
    if call.unembedded and call.key.semantic and state.embed_ahead is not None \
            and uncacheable_reason(answer, allow_truncated=allow_truncated) is None:
        await state.embed_ahead.ready(call.key.query)  # with other stores' queries, at once
    store = state.cache.store
    if call.shadow and state.economics is not None:  # the shadow cache keeps learning
        store = partial(state.cache.store, shadow=True)
    stored = await state.in_thread(
        store, call.prepared, answer, tenant=call.caller.tenant, category=call.category,
        chunks=chunks, latency=latency, allow_truncated=allow_truncated)
    reason = stored.reason or ""
    outcome = "stored" if stored.stored else "error" if reason.startswith("error:") else "refused"
    metrics.stores.inc(stored.category or call.label, outcome)
    if outcome == "error":
        metrics.cache_errors.inc("store")
        log.warning("store failed open (%s); the answer was served, not cached",
                    reason)
    elif outcome == "refused":
        log.debug("answer not cached: %s", reason)
