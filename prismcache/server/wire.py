"""The proxy's HTTP vocabulary: OpenAI-style error bodies, bounded body reading, the
``X-Prism-*`` headers and ``Cache-Control`` directives."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from prismcache.results import Hit, Miss

try:  # the [server] extra brings it: 3-10x the standard library's encoder on a hit's body
    import orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    orjson = None

__all__ = [
    "BodyTooLarge",
    "CacheControl",
    "error_body",
    "error_response",
    "format_entry_id",
    "json_bytes",
    "json_response",
    "parse_entry_id",
    "prism_headers",
    "read_body",
]

HEADER_CACHE = "x-prism-cache"
HEADER_CATEGORY = "x-prism-category"


def json_bytes(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON (no spaces, non-ASCII characters as they are), the
    encoding of every JSON body the proxy writes (hits, errors, replayed stream events).

    With orjson installed it encodes; what orjson refuses (integers past 64 bits, keys that
    are not strings) falls back to the standard library, which raises ``TypeError`` /
    ``ValueError`` for what is not JSON at all.

    >>> json_bytes({"content": "café", "n": [1, 2.5, None]}).decode()
    '{"content":"café","n":[1,2.5,null]}'
    """
    if orjson is not None:
        try:
            return orjson.dumps(body)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(body: Any, *, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    """A compact JSON response (:func:`json_bytes`: the hit path serialises every body)."""
    return Response(json_bytes(body), status_code=status, headers=dict(headers or {}),
                    media_type="application/json")


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """The body OpenAI's API sends with an error, which the ``openai`` client parses."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, *, type: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    """An OpenAI-style error response: ``{"error": {"message", "type", "param", "code"}}``."""
    return json_response(error_body(message, type=type, param=param, code=code),
                         status=status, headers=headers)


class BodyTooLarge(Exception):
    """The request body exceeds ``server.max_body_bytes``."""


async def read_body(request: Request, limit: int) -> bytes:
    """Read the whole request body, refusing (:class:`BodyTooLarge`) as soon as it passes
    ``limit`` bytes, whether or not a ``Content-Length`` announced it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body is {int(declared):,} bytes; the limit is {limit:,}")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the limit of {limit:,} bytes")
        parts.append(chunk)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The request's ``Cache-Control`` directives the proxy honours.

    ``no_cache``: do not serve from the cache (the fresh answer is still stored);
    ``no_store``: do not store the answer (a cached one may still be served).

    >>> CacheControl.parse("No-Cache, max-age=0")
    CacheControl(no_cache=True, no_store=False)
    """

    no_cache: bool = False
    no_store: bool = False

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        """Parse a ``Cache-Control`` header value (``None`` -> no directives)."""
        if not header:
            return cls()
        directives = {part.split("=", 1)[0].strip().lower() for part in header.split(",")}
        return cls(no_cache="no-cache" in directives, no_store="no-store" in directives)


def prism_headers(result: Hit | Miss | None, *, state: str) -> dict[str, str]:
    """The ``X-Prism-*`` response headers for a lookup result; ``state`` is
    ``hit``, ``miss`` or ``bypass``."""
    headers = {HEADER_CACHE: state}
    if result is None:
        return headers
    if result.category:
        headers[HEADER_CATEGORY] = result.category
    if result.similarity is not None:
        headers["x-prism-similarity"] = f"{result.similarity:.4f}"
    if isinstance(result, Hit):
        headers["x-prism-entry"] = format_entry_id(result.entry_id)
        headers["x-prism-age"] = f"{result.age:.0f}"
    return headers


def format_entry_id(entry_id: int) -> str:
    """Entry ids travel as 16 hex digits (``X-Prism-Entry``, the admin API)."""
    return f"{entry_id:016x}"


def parse_entry_id(value: Any) -> int:
    """The inverse of :func:`format_entry_id`; also accepts an int. Raises ``ValueError``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.lower().removeprefix("0x")
        if text and len(text) <= 16 and all(c in "0123456789abcdef" for c in text):
            return int(text, 16)
    raise ValueError(f"{value!r} is not an entry id (16 hex digits, as in X-Prism-Entry)")
