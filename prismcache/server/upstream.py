"""The upstream OpenAI-compatible server, reached with one shared ``httpx.AsyncClient``.

httpx's exceptions are translated here, in one place, into
:class:`~prismcache.errors.UpstreamError` carrying the status the proxy answers with: a
timeout is a 504, any other transport failure (refused, reset, a stream cut off) a 502. An
upstream that *answers* 4xx/5xx is not an exception: its status and body pass through.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import httpx

from prismcache.errors import UpstreamError
from prismcache.stores import redact_url

__all__ = ["Upstream", "UpstreamReply", "iter_lines", "pass_back_headers", "pass_on_headers",
           "read_all"]

log = logging.getLogger("prismcache.server")

# Response headers worth passing back: the content type and the upstream's request id and
# rate-limit information. Hop-by-hop and length/encoding headers are the proxy's own business.
_PASS_BACK_PREFIXES = ("x-ratelimit-", "openai-", "x-request-id", "retry-after")
# Request headers a client may send through (besides the body and Authorization).
_PASS_ON = ("accept", "openai-organization", "openai-project", "openai-beta")


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A complete upstream answer: status, the headers worth passing back, and the body."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str = "application/json"


def pass_back_headers(headers: httpx.Headers) -> dict[str, str]:
    """The upstream response headers the proxy forwards to its client."""
    return {k: v for k, v in headers.items() if k.lower().startswith(_PASS_BACK_PREFIXES)}


def pass_on_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client request headers the proxy forwards upstream (never its Authorization)."""
    return {k: headers[k] for k in _PASS_ON if k in headers}


class Upstream:
    """Calls to one upstream base URL (``http://host:8000/v1``)."""

    def __init__(self, base_url: str, *, timeout: float, connect_timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``timeout`` bounds each read and write, ``connect_timeout`` the connect; nothing
        bounds a whole (possibly long) stream."""
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=timeout),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"Upstream({redact_url(self.base_url)!r})"

    async def request(self, method: str, path: str, *, body: bytes | None = None,
                      authorization: str | None = None,
                      headers: Mapping[str, str] | None = None) -> UpstreamReply:
        """Send one request and read the whole answer (any status). Raises
        :class:`UpstreamError` (status 504 or 502) when no answer arrives."""
        with _mapped(path):
            response = await self._client.request(
                method, path, content=body, headers=self._headers(authorization, headers, body))
            return UpstreamReply(
                status=response.status_code, headers=pass_back_headers(response.headers),
                body=response.content,
                content_type=response.headers.get("content-type", "application/json"))

    @asynccontextmanager
    async def stream(self, path: str, *, body: bytes, authorization: str | None = None,
                     headers: Mapping[str, str] | None = None
                     ) -> AsyncIterator[httpx.Response]:
        """POST ``body`` and yield the response with its body unread, for the caller to
        iterate with :func:`iter_lines`. Raises :class:`UpstreamError` as :meth:`request`."""
        with _mapped(path):
            request = self._client.build_request(
                "POST", path, content=body, headers=self._headers(authorization, headers, body))
            response = await self._client.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    @staticmethod
    def _headers(authorization: str | None, extra: Mapping[str, str] | None,
                 body: bytes | None) -> dict[str, str]:
        headers = {"accept-encoding": "identity", **(extra or {})}
        if body is not None:
            headers["content-type"] = "application/json"
        if authorization:
            headers["authorization"] = authorization
        return headers


async def iter_lines(response: httpx.Response, path: str) -> AsyncIterator[str]:
    """The response body's lines, with transport failures mid-body raised as
    :class:`UpstreamError` (a stream cut off is a 502)."""
    with _mapped(path):
        async for line in response.aiter_lines():
            yield line


async def read_all(response: httpx.Response, path: str) -> bytes:
    """The rest of a streamed response's body, with failures mapped as :func:`iter_lines`."""
    with _mapped(path):
        return await response.aread()


@contextmanager
def _mapped(path: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        log.warning("prismcache: upstream timed out on %s (%s)", path, type(exc).__name__)
        raise UpstreamError(f"the upstream did not answer in time ({type(exc).__name__})",
                            status=504) from None
    except httpx.TransportError as exc:
        log.warning("prismcache: upstream failed on %s (%s)", path, type(exc).__name__)
        raise UpstreamError(f"the upstream could not be reached or broke off "
                            f"({type(exc).__name__})", status=502) from None
