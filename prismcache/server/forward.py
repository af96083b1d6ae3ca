"""The pass-through endpoints: requests the cache does not answer, forwarded as they are.

Only paths :func:`~prismcache.server.upstream.upstream_path` accepts are forwarded, so a
client cannot walk out of ``/v1/`` (``..``, ``%2e%2e``, ``%2f``) and reach another route of
the upstream with the proxy's own upstream key.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from prismcache.errors import UpstreamError
from prismcache.server.state import state_of
from prismcache.server.upstream import UnsafePath, pass_on_headers, upstream_path
from prismcache.server.wire import BodyTooLarge, error_response, read_body

__all__ = ["passthrough", "raw_path"]

log = logging.getLogger("prismcache.server")


def raw_path(request: Request) -> bytes:
    """The request path exactly as the client sent it (percent-escapes kept), which is what
    is checked and forwarded; the decoded ``request.url.path`` hides ``%2f`` and ``%2e``."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.split(b"?", 1)[0]
    return request.url.path.encode("utf-8")


async def passthrough(request: Request) -> Response:
    """Forward a request the cache does not answer, unchanged, to the same path under the
    upstream's base URL (the tenant rules still apply: an unknown key gets a 401 in
    configured mode). A path that is not a plain ``/v1/...`` path gets a 404 before any
    credential is looked at."""
    state = state_of(request)
    endpoint = request.url.path.removeprefix("/v1/").split("/")[0]
    try:
        path = upstream_path(raw_path(request))
    except UnsafePath as exc:
        state.metrics.rejected.inc("other", "bad_path")
        return error_response(404, f"not a path the proxy forwards: {exc}", code="invalid_path")
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
    state.metrics.requests.inc(endpoint, caller.tenant, "", "bypass")
    try:
        reply = await state.upstream.request(
            request.method, path, body=body, authorization=caller.upstream_authorization,
            headers=pass_on_headers(request.headers))
    except UnsafePath as exc:
        state.metrics.rejected.inc("other", "bad_path")
        return error_response(404, f"not a path the proxy forwards: {exc}", code="invalid_path")
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
