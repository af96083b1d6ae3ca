"""Near answers instead of errors while the upstream is overloaded.

When the upstream refuses a missed request with 429 or 503, or the proxy's call to it times out
(504), the client would get an error. If the request's category allows it (a
``fallback_threshold`` in its policy) and the lookup found a candidate at or above that bound
(but below the category's threshold: :attr:`~prismcache.results.Miss.near_entry`), the proxy
serves that candidate instead, marked ``X-Prism-Cache: near`` with ``X-Prism-Similarity``,
``X-Prism-Age`` and ``X-Prism-Entry``, and counts it in ``prismcache_fallback_total``, apart
from hits. The candidate must still pass the category's guards, be unexpired, and belong to
the request's partition (it was found by a search within that partition; this is checked
again on the document). Categories without a ``fallback_threshold`` (``volatile`` and ``math``
by default) pass the upstream's error through unchanged.

A near answer is a trade the operator opts into per category: while the upstream refuses, the
alternative is an error, not a fresh answer; a wrong answer is still worse than a miss, so the
bound stays well above what a ``general`` paraphrase search would accept (``docs/economics.md``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from prismcache import guards
from prismcache.cache import SemanticCache
from prismcache.errors import StoreError
from prismcache.request import RequestKey
from prismcache.results import Hit, Miss
from prismcache.server.sse import assemble, replay
from prismcache.server.state import ProxyState
from prismcache.server.wire import json_response, prism_headers

__all__ = ["OVERLOADED", "fallback", "near_hit"]

log = logging.getLogger("prismcache.server")

#: upstream answers that mean "overloaded": rate limited, unavailable, timed out (the proxy's 504)
OVERLOADED = frozenset({429, 503, 504})


def near_hit(cache: SemanticCache, key: RequestKey, miss: Miss, *,
             now: float | None = None) -> Hit | None:
    """The near candidate of ``miss`` as a servable :class:`Hit`, or ``None`` when the policy
    sets no fallback, the candidate is gone, expired, of another partition or category, below
    the bound, or rejected by the category's guards. Reads the store once; a store error is
    logged and gives ``None`` (the upstream's error is passed through)."""
    if miss.near_entry is None or miss.near_similarity is None or miss.category is None:
        return None
    policy = cache.policy_for(miss.category, key.model)
    bound = policy.fallback_threshold
    if bound is None or miss.near_similarity < bound:
        return None
    try:
        entry = cache.document_store.get(miss.near_entry)
    except StoreError as exc:
        log.warning("prismcache: near answer unavailable: %s", exc)
        return None
    now = time.time() if now is None else now
    if (entry is None or entry.partition != key.partition or entry.category != miss.category
            or entry.expired(now)
            or (policy.ttl is not None and now >= entry.created + policy.ttl.total_seconds())
            or guards.check(key.query, entry.query, policy.guards) is not None):
        return None
    return Hit(entry_id=entry.id, similarity=miss.near_similarity, category=entry.category,
               response=entry.response, chunks=entry.chunks, age=max(0.0, now - entry.created))


async def fallback(state: ProxyState, *, endpoint: str, key: RequestKey, body: Mapping[str, Any],
                   stream: bool, result: Hit | Miss | None,
                   response: Response) -> Response | None:
    """A ``near`` answer in place of ``response`` when the upstream answered it with an
    overload status and the lookup ``result`` holds an acceptable near candidate; else
    ``None`` (serve ``response``)."""
    if response.status_code not in OVERLOADED or not isinstance(result, Miss):
        return None
    if result.near_entry is None:
        return None
    hit = await state.in_thread(near_hit, state.cache, key, result)
    if hit is None:
        return None
    state.metrics.fallbacks.inc(endpoint, key.tenant, hit.category, "near")
    answer = hit.response if hit.response.get("choices") else assemble(hit.chunks or []) or {}
    headers = prism_headers(hit, state="near")
    headers["x-prism-upstream-status"] = str(response.status_code)
    if stream:
        options = body.get("stream_options")
        usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return Response(b"".join(replay(answer, hit.chunks, include_usage=usage)),
                        headers=headers, media_type="text/event-stream")
    return json_response(answer, headers=headers)
