"""The proxy when things go wrong: upstream errors, timeouts, truncations, cut-off streams,
client disconnects, a broken store, bad requests; and coalescing of identical requests."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import httpx
import openai
import pytest

from conftest import FlakyStore
from fake_upstream import FakeUpstream
from proxy_support import Proxy, make_proxy, upstream, user  # noqa: F401 - fixtures

ASKED = "How do I reset my password?"
BODY = {"model": "m1", "messages": user(ASKED)}


def post(proxy: Proxy, body: object = BODY, **kwargs: object) -> httpx.Response:
    with proxy.http() as http:
        if isinstance(body, bytes):
            return http.post("/v1/chat/completions", content=body, **kwargs)
        return http.post("/v1/chat/completions", json=body, **kwargs)


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_upstream_errors_pass_through_and_are_not_cached(make_proxy, upstream, status) -> None:
    proxy = make_proxy()
    upstream.behaviour.status = status
    for stream in (False, True):
        raw = post(proxy, {**BODY, "stream": stream})
        assert raw.status_code == status
        assert raw.json()["error"]["message"] == f"upstream says {status}"
    upstream.behaviour.status = 200
    assert post(proxy).headers["x-prism-cache"] == "miss"
    assert upstream.generations == 3


def test_upstream_timeout_is_a_504_and_not_cached(make_proxy, upstream) -> None:
    proxy = make_proxy(server={"timeout": "0.2s"})
    upstream.behaviour.latency = 0.6
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.client().chat.completions.create(model="m1", messages=user(ASKED))
    assert caught.value.status_code == 504
    assert caught.value.body["type"] == "upstream_error"
    upstream.behaviour.latency = 0.0
    assert post(proxy).headers["x-prism-cache"] == "miss"
    assert proxy.entries() == 1


def test_unreachable_upstream_is_a_502(make_proxy) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = make_proxy(server={"upstream": f"http://127.0.0.1:{port}/v1"})
    raw = post(proxy)
    assert raw.status_code == 502 and raw.json()["error"]["type"] == "upstream_error"
    assert proxy.entries() == 0


@pytest.mark.parametrize("stream", [False, True])
def test_truncated_answers_are_not_cached_unless_configured(make_proxy, upstream, stream) -> None:
    proxy = make_proxy()
    upstream.behaviour.finish_reason = "length"
    post(proxy, {**BODY, "stream": stream})
    assert post(proxy, {**BODY, "stream": stream}).headers["x-prism-cache"] == "miss"
    assert proxy.entries() == 0
    keeper = make_proxy(server={"cache_truncated": True})
    post(keeper, {**BODY, "stream": stream})
    assert post(keeper, {**BODY, "stream": stream}).headers["x-prism-cache"] == "hit"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("reason", ["content_filter", "abort"])
def test_filtered_or_aborted_answers_are_served_never_cached(make_proxy, upstream, stream,
                                                              reason) -> None:
    proxy = make_proxy(server={"cache_truncated": True})
    upstream.behaviour.finish_reason = reason
    first = post(proxy, {**BODY, "stream": stream})
    assert first.status_code == 200 and reason in first.text
    assert post(proxy, {**BODY, "stream": stream}).headers["x-prism-cache"] == "miss"
    assert proxy.entries() == 0 and upstream.generations == 2


def test_stream_cut_off_upstream_is_reported_and_not_cached(make_proxy, upstream) -> None:
    proxy = make_proxy()
    upstream.behaviour.cut_after = 2
    stream = proxy.client().chat.completions.create(model="m1", messages=user(ASKED), stream=True)
    with pytest.raises(openai.APIError, match="broke off"):
        list(stream)
    assert proxy.entries() == 0
    upstream.behaviour.cut_after = None
    assert post(proxy).headers["x-prism-cache"] == "miss"


def test_client_disconnect_mid_stream_is_not_cached(make_proxy, upstream) -> None:
    proxy = make_proxy()
    upstream.behaviour.chunk_delay = 0.05
    with proxy.http() as http, http.stream("POST", "/v1/chat/completions",
                                           json={**BODY, "stream": True}) as raw:
        lines = raw.iter_lines()
        assert next(lines).startswith("data: ")  # then hang up mid-stream
    for _ in range(100):  # the proxy notices the hang-up and abandons the upstream call
        if upstream.streams_aborted:
            break
        time.sleep(0.02)
    assert upstream.streams_aborted == 1 and upstream.streams_finished == 0
    assert proxy.entries() == 0
    upstream.behaviour.chunk_delay = 0.0
    assert post(proxy).headers["x-prism-cache"] == "miss"
    assert upstream.generations == 2


@pytest.mark.parametrize("stream", [False, True])
def test_concurrent_identical_requests_share_one_upstream_call(make_proxy, upstream,
                                                               stream) -> None:
    proxy = make_proxy()
    upstream.behaviour.latency = 0.3

    async def one(client: openai.AsyncOpenAI) -> str:
        if not stream:
            reply = await client.chat.completions.create(model="m1", messages=user(ASKED))
            return reply.choices[0].message.content
        chunks = await client.chat.completions.create(model="m1", messages=user(ASKED),
                                                      stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in chunks])

    async def run() -> list[str]:
        client = proxy.aclient()
        try:
            return await asyncio.gather(*(one(client) for _ in range(8)))
        finally:
            await client.close()

    answers = asyncio.run(run())
    assert upstream.generations == 1
    assert len(set(answers)) == 1 and answers[0].endswith(ASKED)
    with proxy.http() as http:
        assert 'prismcache_coalesced_total{endpoint="chat"} 7' in http.get("/metrics").text


def test_coalesced_followers_share_the_leaders_error(make_proxy, upstream) -> None:
    proxy = make_proxy(server={"timeout": "0.3s"})
    upstream.behaviour.latency = 0.8

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=proxy.root, timeout=10) as http:
            replies = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=BODY) for _ in range(4)))
        return [r.status_code for r in replies]

    assert asyncio.run(run()) == [504] * 4
    assert upstream.generations == 1 and proxy.entries() == 0


def test_store_down_fails_open_and_is_counted(make_proxy, upstream, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="prismcache.server")
    store = FlakyStore()
    proxy = make_proxy(store=store)
    post(proxy)  # stored while the store is up: later lookups find it and must read the store
    proxy.settle()
    store.down = True
    for stream in (False, True):
        raw = post(proxy, {**BODY, "stream": stream})
        assert raw.status_code == 200 and raw.headers["x-prism-cache"] == "miss"
    reply = proxy.client().chat.completions.create(model="m1", messages=user(ASKED))
    assert reply.choices[0].message.content.endswith(ASKED)
    proxy.settle()
    with proxy.http() as http:
        text = http.get("/metrics").text
    assert 'prismcache_cache_errors_total{operation="lookup"} 3' in text
    assert 'prismcache_cache_errors_total{operation="store"} 3' in text
    store.down = False
    assert post(proxy).headers["x-prism-cache"] == "hit"
    assert upstream.generations == 4
    # the logger's name says where a line comes from; the message does not say it again
    warnings = [r.getMessage() for r in caplog.records if r.name == "prismcache.server"]
    assert any("failed open" in m for m in warnings)
    assert not any(m.startswith("prismcache:") for m in warnings)


def test_embedder_down_fails_open(make_proxy, upstream) -> None:
    proxy = make_proxy()
    proxy.embedder.fail = True
    raw = post(proxy)
    assert raw.status_code == 200 and raw.headers["x-prism-cache"] == "miss"


BAD_INPUTS = {
    "malformed JSON": b'{"model": "m1", "messages": [',
    "not an object": b'["model", "m1"]',
    "invalid UTF-8": b'{"model": "m1", "messages": [{"role": "user", "content": "caf\xe9"}]}',
    "missing model": b'{"messages": [{"role": "user", "content": "hi"}]}',
    "missing messages": b'{"model": "m1"}',
    "empty messages": b'{"model": "m1", "messages": []}',
    "empty question": b'{"model": "m1", "messages": [{"role": "user", "content": ""}]}',
    "stream not a boolean": b'{"model": "m1", "stream": "yes", '
                            b'"messages": [{"role": "user", "content": "hi"}]}',
    "too large": b'{"model": "m1", "messages": [{"role": "user", "content": "'
                 + b"x" * 5000 + b'"}]}',
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_a_400_and_leaves_the_cache_alone(make_proxy, upstream, name) -> None:
    proxy = make_proxy(server={"max_body_bytes": 4096})
    post(proxy)  # one entry to keep
    raw = post(proxy, BAD_INPUTS[name], headers={"content-type": "application/json"})
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert proxy.entries() == 1 and upstream.generations == 1


def test_oversized_body_without_content_length_is_a_400(make_proxy, upstream) -> None:
    proxy = make_proxy(server={"max_body_bytes": 1024})

    def chunks():  # chunked transfer encoding: no Content-Length to check up front
        yield b'{"model": "m1", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    with proxy.http() as http:
        raw = http.post("/v1/chat/completions", content=chunks())
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "request_too_large"
    assert upstream.generations == 0


def test_unknown_category_header_is_a_400(make_proxy, upstream) -> None:
    raw = post(make_proxy(), headers={"x-prism-category": "nonsense"})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "X-Prism-Category"
    assert upstream.generations == 0
