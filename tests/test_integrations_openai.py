"""prismcache.wrap: the real ``openai`` client, wrapped, against the fake upstream (a real HTTP
server); and the same requests through the proxy, which must decide alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from conftest import FakeClock
from fake_upstream import FakeUpstream
from integration_support import PARAPHRASE, PASSWORD, cache, entries  # noqa: F401
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from proxy_support import Proxy, make_proxy, upstream, user  # noqa: F401

import prismcache
from prismcache import SemanticCache

@pytest.fixture
def raw(upstream: FakeUpstream) -> Iterator[openai.OpenAI]:  # noqa: F811
    upstream.reset()
    client = openai.OpenAI(base_url=upstream.url, api_key="sk-test",  # type: ignore[attr-defined]
                           max_retries=0, timeout=10.0)
    yield client
    client.close()


@pytest.fixture
def client(raw: openai.OpenAI, cache: SemanticCache) -> openai.OpenAI:
    return prismcache.wrap(raw, cache=cache, tenant="acme")


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=kwargs.pop("model", "m1"), messages=user(text),
                                          **kwargs)


def test_a_paraphrase_is_served_from_the_cache(client: openai.OpenAI, upstream: FakeUpstream,  # noqa: F811
                                               cache: SemanticCache) -> None:
    first = ask(client, PASSWORD)
    second = ask(client, PARAPHRASE)
    assert isinstance(first, ChatCompletion) and isinstance(second, ChatCompletion)
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.model_dump() == first.model_dump()  # the same object, typed
    assert upstream.generations == 1
    assert cache.stats()["loose"].hits == 1


def test_another_tenant_or_model_is_not_served(client: openai.OpenAI, raw: openai.OpenAI,
                                               cache: SemanticCache,
                                               upstream: FakeUpstream) -> None:  # noqa: F811
    first = ask(client, PASSWORD).choices[0].message.content
    globex = prismcache.wrap(raw, cache=cache, tenant="globex")
    assert ask(globex, PASSWORD).choices[0].message.content != first
    assert ask(client, PASSWORD, model="m2").choices[0].message.content != first
    assert upstream.generations == 3
    assert ask(globex, PARAPHRASE).choices[0].message.content != first  # globex's own answer
    assert upstream.generations == 3


def test_streams_round_trip(client: openai.OpenAI, upstream: FakeUpstream,  # noqa: F811
                            cache: SemanticCache) -> None:
    stream = ask(client, PASSWORD, stream=True)
    assert isinstance(stream, openai.Stream)
    with stream:
        chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith(f" to: {PASSWORD}")
    assert entries(cache) == 1

    replayed = list(ask(client, PARAPHRASE, stream=True))  # the recorded chunks, replayed
    assert [c.model_dump() for c in replayed] == [c.model_dump() for c in chunks]
    whole = ask(client, PARAPHRASE)  # a non-streaming request gets the stream assembled
    assert isinstance(whole, ChatCompletion) and whole.choices[0].message.content == text
    assert whole.choices[0].finish_reason == "stop"
    assert upstream.generations == 1


def test_a_stored_answer_is_synthesised_as_a_stream(client: openai.OpenAI,
                                                    upstream: FakeUpstream) -> None:  # noqa: F811
    answer = ask(client, PASSWORD).choices[0].message.content
    chunks = list(ask(client, PARAPHRASE, stream=True,
                      stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
    assert upstream.generations == 1


@pytest.mark.parametrize("behaviour", [
    {"status": 500}, {"status": 429}, {"finish_reason": "length"},
    {"finish_reason": "content_filter"}, {"tool_call": True},
])
@pytest.mark.parametrize("stream", [False, True])
def test_nothing_failed_truncated_filtered_or_calling_a_tool_is_stored(
        client: openai.OpenAI, upstream: FakeUpstream, cache: SemanticCache,  # noqa: F811
        behaviour: dict[str, Any], stream: bool) -> None:
    for name, value in behaviour.items():
        setattr(upstream.behaviour, name, value)
    if "status" in behaviour:
        with pytest.raises(openai.APIStatusError):
            ask(client, PASSWORD, stream=stream)
    else:
        reply = ask(client, PASSWORD, stream=stream)
        if stream:
            list(reply)
    assert entries(cache) == 0
    upstream.reset()
    ask(client, PASSWORD)  # still a miss: nothing was stored
    assert upstream.generations == 1


def test_a_stream_cut_off_or_left_unfinished_stores_nothing(
        client: openai.OpenAI, upstream: FakeUpstream, cache: SemanticCache) -> None:  # noqa: F811
    upstream.behaviour.cut_after = 2
    with pytest.raises(openai.APIError), ask(client, PASSWORD, stream=True) as stream:
        list(stream)
    upstream.behaviour.cut_after = None
    with ask(client, PASSWORD, stream=True) as stream:
        next(iter(stream))  # the caller stops reading: the answer is not known to be whole
    assert entries(cache) == 0


@pytest.mark.parametrize("kwargs", [
    {"n": 2}, {"temperature": 1.7},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]},
    {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
    {"messages": [{"role": "user", "content": ""}]},  # the proxy's 400: not the cache's call
])
def test_requests_the_proxy_bypasses_go_upstream_every_time(
        client: openai.OpenAI, upstream: FakeUpstream, cache: SemanticCache,  # noqa: F811
        kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("messages", user(PASSWORD))
    for _ in range(2):
        client.chat.completions.create(model="m1", **kwargs)
    assert upstream.generations == 2
    assert entries(cache) == 0


def test_context_tools_and_settings_partition(client: openai.OpenAI,
                                              upstream: FakeUpstream) -> None:  # noqa: F811
    ask(client, PASSWORD)
    system = [{"role": "system", "content": "Answer in French."}, *user(PARAPHRASE)]
    client.chat.completions.create(model="m1", messages=system)
    ask(client, PARAPHRASE, max_tokens=5)
    ask(client, PARAPHRASE, tools=[{"type": "function", "function": {"name": "lookup"}}])
    assert upstream.generations == 4
    # ... and every one of them is now served, by meaning, within its own partition
    client.chat.completions.create(model="m1", messages=iter(system))  # any iterable
    ask(client, PASSWORD, max_tokens=5)
    assert upstream.generations == 4


def test_category_ttl_and_extra_body(raw: openai.OpenAI, cache: SemanticCache,
                                     upstream: FakeUpstream, clock: FakeClock) -> None:  # noqa: F811
    strict = prismcache.wrap(raw, cache=cache, tenant="acme", category="strict")
    ask(strict, PASSWORD)
    ask(strict, PARAPHRASE)  # 0.88 similar: below the strict category's 0.99
    ask(strict, PASSWORD.upper())  # a verbatim repeat: the exact tier
    assert upstream.generations == 2
    assert cache.stats()["strict"].entries == 2
    clock.tick(3601)  # past the category's 1 h TTL
    ask(strict, PASSWORD)
    assert upstream.generations == 3
    ask(strict, PASSWORD, extra_body={"seed": 7})  # extra_body is part of the request
    assert upstream.generations == 4
    with pytest.raises(ValueError, match="unknown category"):
        prismcache.wrap(raw, cache=cache, category="nope")
    with pytest.raises(TypeError):
        prismcache.wrap(object(), cache=cache)


def test_everything_else_is_the_wrapped_clients(client: openai.OpenAI,
                                                upstream: FakeUpstream) -> None:  # noqa: F811
    assert client.models.list().data[0].id == "m1"
    raw = client.chat.completions.with_raw_response.create(model="m1", messages=user("hi"))
    assert raw.http_response.status_code == 200
    assert upstream.generations == 1


def test_the_async_client(upstream: FakeUpstream, cache: SemanticCache) -> None:  # noqa: F811
    upstream.reset()

    async def run() -> None:
        raw = openai.AsyncOpenAI(base_url=upstream.url,  # type: ignore[attr-defined]
                                 api_key="sk-test", max_retries=0, timeout=10.0)
        client = prismcache.wrap(raw, cache=cache, tenant="acme")
        try:
            first = await client.chat.completions.create(model="m1", messages=user(PASSWORD))
            second = await client.chat.completions.create(model="m1", messages=user(PARAPHRASE))
            assert isinstance(second, ChatCompletion)
            assert second.choices[0].message.content == first.choices[0].message.content
            stream = await client.chat.completions.create(
                model="m1", messages=user("tell me a story about cats"), stream=True)
            assert isinstance(stream, openai.AsyncStream)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            again = await client.chat.completions.create(
                model="m1", messages=user("Tell me a short story about cats"), stream=True)
            assert "".join([c.choices[0].delta.content or ""
                            async for c in again if c.choices]) == text
            upstream.behaviour.status = 503
            with pytest.raises(openai.APIStatusError):
                await client.chat.completions.create(model="m1", messages=user("fresh"))
        finally:
            await raw.close()

    asyncio.run(run())
    assert upstream.generations == 3
    assert entries(cache) == 2


# -- one rule: the proxy and the wrapped client decide every request alike ------------------

REQUESTS: list[dict[str, Any]] = [
    {"messages": user(PASSWORD)},
    {"messages": user(PARAPHRASE)},
    {"messages": user(PARAPHRASE), "model": "m2"},
    {"messages": [{"role": "system", "content": "Be brief."}, *user(PARAPHRASE)]},
    {"messages": user(PARAPHRASE), "n": 2},
    {"messages": user(PARAPHRASE), "temperature": 1.5},
    {"messages": user(PARAPHRASE), "temperature": 0.7},
    {"messages": user(PARAPHRASE), "temperature": 0.9},
    {"messages": user("tell me a story about cats"), "stream": True},
    {"messages": user("Tell me a short story about cats")},
    {"messages": user("Tell me a short story about cats"), "stop": ["\n"]},
    {"messages": user("hi"), "tools": [{"type": "function", "function": {"name": "f"}}]},
    {"messages": user("hi"), "tools": [{"type": "function", "function": {"name": "f"}}]},
]


def test_the_proxy_and_the_wrapped_client_decide_alike(
        make_proxy: Callable[..., Proxy], make_cache: Callable[..., SemanticCache],  # noqa: F811
        upstream: FakeUpstream) -> None:  # noqa: F811
    proxy = make_proxy()
    through_proxy = _served(proxy.client(), upstream, proxy.cache, proxy.settle)
    upstream.reset()
    own = make_cache({"default_category": "loose"})
    with openai.OpenAI(base_url=upstream.url, api_key="sk-test",  # type: ignore[attr-defined]
                       max_retries=0) as raw:
        through_wrap = _served(prismcache.wrap(raw, cache=own, tenant="acme"), upstream, own)
    assert through_wrap == through_proxy
    # an absent temperature samples at 1.0: 0.7 and 0.9 share its sampling class
    assert [cached for cached, _ in through_proxy] == [
        False, True, False, False, False, False, True, True, False, True, False, False, True]


def _served(client: openai.OpenAI, upstream: FakeUpstream,  # noqa: F811
            cache: SemanticCache, settle: Callable[[], None] = lambda: None,
            ) -> list[tuple[bool, int]]:
    """For each request: (served without the upstream, entries stored so far, once ``settle``
    has waited for the stores after the reply)."""
    out = []
    for request in REQUESTS:
        before = upstream.generations
        reply = client.chat.completions.create(**{"model": "m1", **request})
        if request.get("stream"):
            list(reply)
        settle()
        out.append((upstream.generations == before, entries(cache)))
    return out
