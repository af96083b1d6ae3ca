"""The cached ``openai`` client behind :func:`prismcache.wrap`.

A call's way mirrors the proxy's (:mod:`prismcache.server.completions`), through the same library
pieces: the keyword arguments are the request body; :meth:`SemanticCache.prepare` keys it once
(:func:`~prismcache.request.key_request`: ``n > 1``, hot temperatures, non-text content and
tool-loop turns bypass) and :meth:`SemanticCache.lookup` decides; a hit is served as a
``ChatCompletion`` or replayed as a stream of ``ChatCompletionChunk``
(:func:`~prismcache.streams.completion_of`, :func:`~prismcache.streams.replay_chunks`); a miss
calls the wrapped client and offers what it returns to :meth:`SemanticCache.store`
(:func:`~prismcache.responses.uncacheable_reason`), a stream only once it ended as it should
(:class:`~prismcache.streams.StreamRecord`). An error from the upstream raises as the ``openai``
client raises it, and nothing is stored.

Requests the cache cannot key (which the proxy answers with a 400) go to the wrapped client
uncached: it, not the cache, decides whether they are valid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prismcache.cache import SemanticCache
from prismcache.errors import RequestError
from prismcache.request import PreparedRequest
from prismcache.results import Hit, Miss
from prismcache.streams import StreamRecord, completion_of, replay_chunks

try:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
except ImportError as exc:  # pragma: no cover - exercised by the import-hygiene test
    raise ImportError(
        "prismcache.wrap needs the openai package: pip install 'prismcache[openai]'"
    ) from exc

__all__ = ["CachedAsyncStream", "CachedOpenAI", "CachedStream", "wrap_client"]

log = logging.getLogger("prismcache")

# Arguments of ``create`` that configure the HTTP call, not the request body.
_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


def wrap_client(client: Any, *, cache: SemanticCache, tenant: str = "default",
                category: str | None = None) -> CachedOpenAI:
    """See :func:`prismcache.wrap`."""
    if not isinstance(client, openai.OpenAI | openai.AsyncOpenAI):
        raise TypeError(f"wrap() takes an openai.OpenAI or openai.AsyncOpenAI client, "
                        f"not {type(client).__name__}")
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be a non-empty string")
    if category is not None and category not in cache.config.categories:
        raise ValueError(f"unknown category {category!r}; known: "
                         f"{sorted(cache.config.categories)}")
    return CachedOpenAI(client, _Front(cache, tenant, category))


class CachedOpenAI:
    """An ``openai`` client whose ``chat.completions.create`` goes through the cache; every
    other attribute is the wrapped client's."""

    def __init__(self, client: Any, front: _Front) -> None:
        self._client = client
        completions: Any = (_AsyncCompletions if isinstance(client, openai.AsyncOpenAI)
                            else _Completions)(client.chat.completions, front)
        self.chat = _Passthrough(client.chat, completions=completions)

    def __getattr__(self, name: str) -> Any:
        if name == "_client":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"prismcache.wrap({self._client!r})"


class _Passthrough:
    """The wrapped object's attributes, except the ones given."""

    def __init__(self, inner: Any, **own: Any) -> None:
        self._inner = inner
        self.__dict__.update(own)

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


@dataclass(frozen=True, slots=True)
class _Call:
    """One ``create`` call: what is passed on, and the request as the cache keyed it, once
    (``None``: it cannot be keyed, and goes on uncached)."""

    kwargs: dict[str, Any]
    request: PreparedRequest | None
    stream: bool
    include_usage: bool


class _Front:
    """The cache side of a call, shared by the sync and async clients."""

    def __init__(self, cache: SemanticCache, tenant: str, category: str | None) -> None:
        self.cache, self.tenant, self.category = cache, tenant, category

    def prepare(self, kwargs: Mapping[str, Any]) -> _Call:
        passed = dict(kwargs)
        messages = passed.get("messages")
        if isinstance(messages, Iterable) and not isinstance(
                messages, list | tuple | str | bytes | Mapping):
            passed["messages"] = list(messages)  # read once: for the key and for the call
        options = passed.get("stream_options")
        return _Call(kwargs=passed, request=self._prepared(_body(passed)),
                     stream=passed.get("stream") is True,
                     include_usage=isinstance(options, Mapping)
                     and options.get("include_usage") is True)

    def _prepared(self, body: dict[str, Any] | None) -> PreparedRequest | None:
        if body is None:
            return None
        try:
            return self.cache.prepare(body, tenant=self.tenant)
        except RequestError as exc:
            log.debug("prismcache: request not cached: %s", exc)
            return None

    def lookup(self, call: _Call) -> Hit | Miss | None:
        """The cache's answer, or ``None`` when the request cannot be keyed."""
        if call.request is None:
            return None
        return self.cache.lookup(call.request, category=self.category)

    def serve(self, call: _Call, hit: Hit) -> Any:
        """A hit as the ``openai`` client would have returned it."""
        response = completion_of(hit.response, hit.chunks)
        if not call.stream:
            return ChatCompletion.construct(**response)
        return (ChatCompletionChunk.construct(**chunk)
                for chunk in replay_chunks(response, hit.chunks, include_usage=call.include_usage))

    def store(self, call: _Call, answer: dict[str, Any] | None,
              chunks: list[dict[str, Any]] | None, latency: float) -> None:
        if answer is None or call.request is None:
            return
        stored = self.cache.store(call.request, answer, category=self.category, chunks=chunks,
                                  latency=latency)
        if not stored.stored:
            log.debug("prismcache: answer not cached: %s", stored.reason)


def _storable(result: Hit | Miss | None) -> bool:
    return isinstance(result, Miss) and result.cacheable


class _Completions(_Passthrough):
    """``chat.completions`` of a sync client."""

    def __init__(self, inner: Any, front: _Front) -> None:
        super().__init__(inner)
        self._front = front

    def create(self, **kwargs: Any) -> Any:
        """``openai.OpenAI().chat.completions.create``, answered from the cache when it may."""
        front = self._front
        call = front.prepare(kwargs)
        result = front.lookup(call)
        if isinstance(result, Hit):
            served = front.serve(call, result)
            return CachedStream(served) if call.stream else served
        started = time.perf_counter()
        reply = self._inner.create(**call.kwargs)
        if not _storable(result):
            return reply
        if not call.stream:
            front.store(call, reply.to_dict(), None, time.perf_counter() - started)
            return reply

        def done(record: StreamRecord) -> None:
            front.store(call, record.answer(), record.chunks, time.perf_counter() - started)

        return CachedStream(_recorded(reply, done), upstream=reply)


class _AsyncCompletions(_Passthrough):
    """``chat.completions`` of an async client: the cache's blocking work runs in a thread."""

    def __init__(self, inner: Any, front: _Front) -> None:
        super().__init__(inner)
        self._front = front

    async def create(self, **kwargs: Any) -> Any:
        """``openai.AsyncOpenAI().chat.completions.create``, answered from the cache when it
        may."""
        front = self._front
        call = front.prepare(kwargs)
        result = await asyncio.to_thread(front.lookup, call)
        if isinstance(result, Hit):
            served = front.serve(call, result)
            return CachedAsyncStream(_aiter(served)) if call.stream else served
        started = time.perf_counter()
        reply = await self._inner.create(**call.kwargs)
        if not _storable(result):
            return reply
        if not call.stream:
            await asyncio.to_thread(front.store, call, reply.to_dict(), None,
                                    time.perf_counter() - started)
            return reply

        async def done(record: StreamRecord) -> None:
            await asyncio.to_thread(front.store, call, record.answer(), record.chunks,
                                    time.perf_counter() - started)

        return CachedAsyncStream(_arecorded(reply, done), upstream=reply)


class CachedStream(openai.Stream[ChatCompletionChunk]):
    """An ``openai.Stream`` of ``ChatCompletionChunk`` from the cache (a replayed hit) or
    recorded on its way from the upstream (a miss; ``response`` is then the upstream's)."""

    def __init__(self, chunks: Iterator[ChatCompletionChunk], *,
                 upstream: openai.Stream[ChatCompletionChunk] | None = None) -> None:
        # Not openai.Stream.__init__: that one decodes an HTTP response, this one has chunks.
        self._iterator = chunks
        self._upstream = upstream
        if upstream is not None:
            self.response = upstream.response

    def close(self) -> None:
        """Release the upstream connection, if any (a stream left unfinished stores nothing)."""
        if self._upstream is not None:
            self._upstream.close()


class CachedAsyncStream(openai.AsyncStream[ChatCompletionChunk]):
    """The async :class:`CachedStream`: an ``openai.AsyncStream`` of ``ChatCompletionChunk``."""

    def __init__(self, chunks: AsyncIterator[ChatCompletionChunk], *,
                 upstream: openai.AsyncStream[ChatCompletionChunk] | None = None) -> None:
        self._iterator = chunks
        self._upstream = upstream
        if upstream is not None:
            self.response = upstream.response

    async def close(self) -> None:
        """Release the upstream connection, if any."""
        if self._upstream is not None:
            await self._upstream.close()


def _recorded(stream: Iterable[ChatCompletionChunk],
              done: Callable[[StreamRecord], None]) -> Iterator[ChatCompletionChunk]:
    record = StreamRecord()
    for chunk in stream:
        record.add(chunk.to_dict())
        yield chunk
    record.finish()  # the openai client stops at `data: [DONE]`; a broken stream raised
    done(record)


async def _arecorded(stream: AsyncIterator[ChatCompletionChunk],
                     done: Callable[[StreamRecord], Awaitable[None]]
                     ) -> AsyncIterator[ChatCompletionChunk]:
    record = StreamRecord()
    async for chunk in stream:
        record.add(chunk.to_dict())
        yield chunk
    record.finish()
    await done(record)


async def _aiter(chunks: Iterable[ChatCompletionChunk]) -> AsyncIterator[ChatCompletionChunk]:
    for chunk in chunks:
        yield chunk


def _body(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON body the ``openai`` client sends for ``kwargs`` (``extra_body`` merged,
    omitted arguments dropped), or ``None`` when an argument is not plain JSON data."""
    body = {name: value for name, value in kwargs.items()
            if name not in _OPTIONS and not isinstance(value, openai.NotGiven | openai.Omit)}
    extra = kwargs.get("extra_body")
    if isinstance(extra, Mapping):
        body.update(extra)
    try:
        return {name: _plain(value) for name, value in body.items()}
    except TypeError as exc:
        log.debug("prismcache: request not cached: %s", exc)
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, openai.BaseModel):  # e.g. a ChatCompletionMessage sent back
        return value.to_dict()
    # A generator inside the arguments cannot be read without consuming what is sent.
    raise TypeError(f"argument of type {type(value).__name__} is not JSON data")
