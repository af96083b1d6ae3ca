"""The pass-through endpoints: the rest of the OpenAI API, forwarded uncached.

Every ``/v1/...`` request the cache does not answer (embeddings, models, moderations, audio,
images, responses, files, batches, ...) is streamed to the same path under the upstream's base
URL and its answer streamed back, with the same tenant rules as the cached endpoints (an
unknown key is a 401 in configured mode) and ``X-Prism-Cache: bypass``.

Two checks come first, before any credential is looked at:

* the path: only what :func:`~prismcache.server.upstream.upstream_path` accepts is forwarded,
  so a client cannot walk out of ``/v1/`` (``..``, ``%2e%2e``, ``%2f``) to another route of
  the upstream with the proxy's upstream key; a first segment outside :data:`ENDPOINTS` is a
  404;
* shared objects: files, batches, stored completions and the like live in the upstream
  *account*. When the proxy sends its own upstream key (configured tenants, or
  ``server.upstream_api_key_env``), one tenant would see every other tenant's objects, so
  those endpoints answer 403 unless ``server.share_upstream_objects: true`` says every client
  may share them. In pass-through mode with the clients' own keys they are always forwarded.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from prismcache.errors import UpstreamError
from prismcache.server.state import state_of
from prismcache.server.upstream import (
    UnsafePath,
    UpstreamResponse,
    iter_raw,
    pass_back_headers,
    pass_on_headers,
    upstream_path,
)
from prismcache.server.wire import HEADER_CACHE, error_response

__all__ = ["ENDPOINTS", "passthrough", "raw_path"]

log = logging.getLogger("prismcache.server")

#: The OpenAI API families forwarded (first path segment under ``/v1``) -> whether they reach
#: objects stored account-wide at the upstream (listable by anyone holding the account's key).
ENDPOINTS: dict[str, bool] = {
    "models": False,
    "embeddings": False,
    "moderations": False,
    "audio": False,
    "images": False,
    "responses": False,  # generation; stored responses are reached only by their id
    "conversations": False,  # reached only by id
    "chat": True,  # GET /v1/chat/completions lists stored completions
    "files": True,
    "uploads": True,
    "batches": True,
    "fine_tuning": True,
    "vector_stores": True,
    "assistants": True,
    "threads": True,
    "containers": True,
    "evals": True,
}
# Request headers that describe a forwarded body (a multipart upload's boundary, its size).
_BODY_HEADERS = ("content-type", "content-length")


def raw_path(request: Request) -> bytes:
    """The request path exactly as the client sent it (percent-escapes kept), which is what
    is checked and forwarded; the decoded ``request.url.path`` hides ``%2f`` and ``%2e``."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.split(b"?", 1)[0]
    return request.url.path.encode("utf-8")


async def passthrough(request: Request) -> Response:
    """Forward one request the cache does not answer (see the module docstring)."""
    state = state_of(request)
    try:
        path = upstream_path(raw_path(request))
    except UnsafePath as exc:
        state.metrics.rejected.inc("other", "bad_path")
        return error_response(404, f"not a path the proxy forwards: {exc}", code="invalid_path")
    endpoint = path.split("/")[1]
    if endpoint not in ENDPOINTS:
        state.metrics.rejected.inc("other", "bad_path")
        return error_response(404, f"/v1/{endpoint} is not an OpenAI API endpoint the proxy "
                                   f"forwards; known: {sorted(ENDPOINTS)}", code="invalid_path")
    caller = state.auth.caller(request.headers)
    if caller is None:
        state.metrics.rejected.inc(endpoint, "unauthorized")
        return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
    if ENDPOINTS[endpoint] and not caller.own_credential \
            and not state.settings.share_upstream_objects:
        state.metrics.rejected.inc(endpoint, "shared_objects")
        return error_response(
            403, f"/v1/{endpoint} reaches objects every client of this proxy would share "
                 "(the proxy sends one upstream key for all of them); set "
                 "server.share_upstream_objects: true to allow it",
            type="permission_error", code="shared_upstream_objects")
    state.metrics.requests.inc(endpoint, caller.tenant, "", "bypass")
    headers = pass_on_headers(request.headers)
    headers.update({k: request.headers[k] for k in _BODY_HEADERS if k in request.headers})
    has_body = request.method not in ("GET", "HEAD") and (
        "content-length" in request.headers or "transfer-encoding" in request.headers)
    try:
        reply = await state.upstream.open(
            request.method, path, query=request.url.query,
            content=request.stream() if has_body else None,
            authorization=caller.upstream_authorization, headers=headers)
    except UnsafePath as exc:
        state.metrics.rejected.inc("other", "bad_path")
        return error_response(404, f"not a path the proxy forwards: {exc}", code="invalid_path")
    except UpstreamError as exc:
        status = exc.status or 502
        state.metrics.upstream_errors.inc(endpoint, str(status))
        return error_response(status, str(exc), type="upstream_error",
                              code="upstream_timeout" if status == 504 else "upstream_error")
    if reply.status_code >= 400:
        state.metrics.upstream_errors.inc(endpoint, str(reply.status_code))
    return StreamingResponse(
        _body(reply, path), status_code=reply.status_code,
        headers={**pass_back_headers(reply.headers), HEADER_CACHE: "bypass"},
        media_type=reply.headers.get("content-type"), background=BackgroundTask(reply.aclose))


async def _body(reply: UpstreamResponse, path: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in iter_raw(reply, path):
            yield chunk
    except UpstreamError as exc:  # the status line is sent: all that is left is to stop
        log.warning("pass-through body broke off: %s", exc)
