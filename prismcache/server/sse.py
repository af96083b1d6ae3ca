"""Server-sent events: reading an upstream stream's events, and replaying a stored completion
as a stream the ``openai`` client parses.

What the chunks mean (assembling them, when a stream is complete, what a replay sends) is
:mod:`prismcache.streams`, shared with the wrapped ``openai`` client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from prismcache.server.wire import json_bytes
from prismcache.streams import replay_chunks

__all__ = ["DONE", "encode_event", "iter_events", "replay"]

DONE = b"data: [DONE]\n\n"


def encode_event(data: str | Mapping[str, Any]) -> bytes:
    """One SSE event carrying ``data`` (a JSON text, or an object to serialise with
    :func:`~prismcache.server.wire.json_bytes`)."""
    if not isinstance(data, str):
        return b"data: " + json_bytes(data) + b"\n\n"
    return b"data: " + data.encode("utf-8") + b"\n\n"


async def iter_events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each event in an SSE line stream (multi-line data joined by ``\\n``);
    comments and ``event:``/``id:`` fields are dropped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def replay(response: Mapping[str, Any], chunks: list[dict[str, Any]] | None = None, *,
           include_usage: bool = False) -> Iterator[bytes]:
    """The SSE events that replay a stored completion (:func:`~prismcache.streams.replay_chunks`),
    ending with ``data: [DONE]``."""
    for chunk in replay_chunks(response, chunks, include_usage=include_usage):
        yield encode_event(chunk)
    yield DONE
