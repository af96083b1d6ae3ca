"""The upstream OpenAI-compatible server, reached with one shared ``aiohttp.ClientSession``.

aiohttp rather than httpx (which the project uses elsewhere): on loopback against the fake
upstream it spends 0.12-0.28 ms of CPU per call where httpx spends 1.1-1.9 ms, and at 50
concurrent calls it does 14x the requests/s (``bench/upstream_client.py``,
``docs/benchmarks.md``); a miss waits on the proxy's one event loop, so that CPU is latency.

aiohttp's exceptions are translated here, in one place, into
:class:`~prismcache.errors.UpstreamError` carrying the status the proxy answers with: a
timeout is a 504, any other transport failure (refused, reset, a stream cut off) a 502. An
upstream that *answers* 4xx/5xx is not an exception: its status and body pass through.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from prismcache.errors import UpstreamError
from prismcache.stores import redact_url

__all__ = ["UnsafePath", "Upstream", "UpstreamReply", "UpstreamResponse", "iter_lines",
           "iter_raw", "pass_back_headers", "pass_on_headers", "read_all", "upstream_path"]

log = logging.getLogger("prismcache.server")

# Response headers worth passing back: the content type and the upstream's request id and
# rate-limit information. Hop-by-hop and length/encoding headers are the proxy's own business.
_PASS_BACK_PREFIXES = ("x-ratelimit-", "openai-", "x-request-id", "retry-after",
                       "content-disposition")
# Request headers a client may send through (besides the body and Authorization).
_PASS_ON = ("accept", "openai-organization", "openai-project", "openai-beta")


# A path segment: RFC 3986 pchars, percent-escapes allowed except the ones that hide a dot, a
# separator, a NUL or another escape (%2e, %2f, %5c, %00, %25), which upstreams and the servers
# in front of them decode at different times.
_SEGMENT = re.compile(r"^(?:[A-Za-z0-9\-_~!$&'()*+,;=:@.]"
                      r"|%(?!2[eEfF5]|5[cC]|[01][0-9a-fA-F])[0-9A-Fa-f]{2})+$")


class UnsafePath(ValueError):
    """A path the proxy refuses to forward: a dot segment, an encoded dot, slash or
    backslash, an empty segment, or anything outside ``/v1/``."""


def upstream_path(raw_path: str | bytes) -> str:
    """The path to ask the upstream for (relative to its base URL) for a client's raw,
    still percent-encoded request path: ``/v1/models/m1`` -> ``/models/m1``.

    Raises :class:`UnsafePath` unless every segment after ``/v1`` is non-empty, is not ``.``
    or ``..`` and has no escape that decodes to a dot, a slash, a backslash, a control
    character or a percent sign. Nothing is decoded or resolved: what is checked is exactly
    what is sent.

    >>> upstream_path("/v1/models/meta-llama%3ALlama-3")
    '/models/meta-llama%3ALlama-3'
    >>> upstream_path("/v1/models/%2e%2e/files")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    prismcache.server.upstream.UnsafePath: path segment '%2e%2e' is not allowed
    """
    if isinstance(raw_path, bytes):
        try:
            raw_path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            raise UnsafePath("the path must be ASCII (percent-encode the rest)") from None
    if not raw_path.startswith("/v1/"):
        raise UnsafePath("only paths under /v1/ are forwarded")
    path = raw_path[len("/v1"):]
    for segment in path[1:].split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise UnsafePath(f"path segment {segment!r} is not allowed")
    return path


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A complete upstream answer: status, the headers worth passing back, and the body."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str = "application/json"


def pass_back_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream response headers the proxy forwards to its client."""
    return {k: v for k, v in headers.items() if k.lower().startswith(_PASS_BACK_PREFIXES)}


def pass_on_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The client request headers the proxy forwards upstream (never its Authorization)."""
    return {k: headers[k] for k in _PASS_ON if k in headers}


class UpstreamResponse:
    """An upstream answer whose body is still to be read (with :func:`iter_lines`,
    :func:`iter_raw` or :func:`read_all`); :meth:`aclose` releases its connection."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers  # case-insensitive

    async def aclose(self) -> None:
        """Release the connection (closed, not reused, when the body was not read to its end)."""
        self._response.release()


class Upstream:
    """Calls to one upstream base URL (``http://host:8000/v1``)."""

    def __init__(self, base_url: str, *, timeout: float, connect_timeout: float) -> None:
        """``timeout`` bounds each read (and the wait for a pooled connection),
        ``connect_timeout`` the connect; nothing bounds a whole (possibly long) stream. The
        session is opened on the first call, in the event loop that serves it."""
        self.base_url = base_url.rstrip("/")
        self._base_path = URL(self.base_url, encoded=True).raw_path.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout,
                                              sock_connect=connect_timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"Upstream({redact_url(self.base_url)!r})"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=0),
                timeout=self._timeout, auto_decompress=False, skip_auto_headers=("user-agent",))
        return self._session

    async def request(self, method: str, path: str, *, body: bytes | None = None,
                      authorization: str | None = None,
                      headers: Mapping[str, str] | None = None) -> UpstreamReply:
        """Send one request and read the whole answer (any status). Raises
        :class:`UpstreamError` (status 504 or 502) when no answer arrives."""
        url = self._url(path)
        with _mapped(path):
            async with self._client().request(
                    method, url, data=body, headers=self._headers(authorization, headers, body),
                    allow_redirects=False) as response:
                return UpstreamReply(
                    status=response.status, headers=pass_back_headers(response.headers),
                    body=await response.read(),
                    content_type=response.headers.get("content-type", "application/json"))

    @asynccontextmanager
    async def stream(self, path: str, *, body: bytes, authorization: str | None = None,
                     headers: Mapping[str, str] | None = None
                     ) -> AsyncIterator[UpstreamResponse]:
        """POST ``body`` and yield the response with its body unread, for the caller to
        iterate with :func:`iter_lines`. Raises :class:`UpstreamError` as :meth:`request`."""
        url = self._url(path)
        with _mapped(path):
            response = UpstreamResponse(await self._client().request(
                "POST", url, data=body, headers=self._headers(authorization, headers, body),
                allow_redirects=False))
        try:
            yield response
        finally:
            await response.aclose()

    async def open(self, method: str, path: str, *, query: str = "",
                   content: AsyncIterator[bytes] | None = None,
                   authorization: str | None = None,
                   headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        """Send ``method path?query`` with ``content`` streamed as the body, and return the
        response with its body unread (the caller iterates :func:`iter_raw` and closes it).
        Raises :class:`UnsafePath` or :class:`UpstreamError` as :meth:`request`."""
        url = self._url(path)
        if query:
            url = URL(f"{url}?{query.encode('ascii', 'replace').decode('ascii')}",
                      encoded=True)
        with _mapped(path):
            return UpstreamResponse(await self._client().request(
                method, url, data=content, headers=self._headers(authorization, headers, None),
                allow_redirects=False))

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    def _url(self, path: str) -> URL:
        """The absolute URL of ``path`` under the base URL, sent as written (never
        re-encoded or resolved). Raises :class:`UnsafePath` when it would not be the base
        path followed by ``path`` verbatim, so the upstream credential is only ever attached
        to a path the proxy meant to forward."""
        try:
            expected = self._base_path + path
            path.encode("ascii")
        except UnicodeEncodeError:
            raise UnsafePath("the path must be ASCII") from None
        url = URL(self.base_url + path, encoded=True)
        if not path.startswith("/") or url.raw_path != expected or "?" in path or "#" in path:
            raise UnsafePath(f"refusing to forward {path!r}: it does not stay under the "
                             "upstream's base path as written")
        return url

    @staticmethod
    def _headers(authorization: str | None, extra: Mapping[str, str] | None,
                 body: bytes | None) -> dict[str, str]:
        headers = {"accept-encoding": "identity", **(extra or {})}
        if body is not None:
            headers.setdefault("content-type", "application/json")
        if authorization:
            headers["authorization"] = authorization
        return headers


async def iter_lines(response: UpstreamResponse, path: str) -> AsyncIterator[str]:
    """The response body's lines (``\\n`` or ``\\r\\n`` ended, of any length), with
    transport failures mid-body raised as :class:`UpstreamError` (a stream cut off is a 502)."""
    pending = b""
    async for chunk in iter_raw(response, path):
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.removesuffix(b"\r").decode("utf-8", "replace")


async def iter_raw(response: UpstreamResponse, path: str) -> AsyncIterator[bytes]:
    """The response body's bytes as they arrive, with failures mapped as :func:`iter_lines`."""
    with _mapped(path):
        async for chunk in response._response.content.iter_any():
            yield chunk


async def read_all(response: UpstreamResponse, path: str) -> bytes:
    """The rest of a streamed response's body, with failures mapped as :func:`iter_lines`."""
    with _mapped(path):
        return await response._response.read()


@contextmanager
def _mapped(path: str) -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        log.warning("upstream timed out on %s (%s)", path, type(exc).__name__)
        raise UpstreamError(f"the upstream did not answer in time ({type(exc).__name__})",
                            status=504) from None
    except aiohttp.ClientError as exc:
        log.warning("upstream failed on %s (%s)", path, type(exc).__name__)
        raise UpstreamError(f"the upstream could not be reached or broke off "
                            f"({type(exc).__name__})", status=502) from None
