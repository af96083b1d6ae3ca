"""The proxy through real HTTP: hits as JSON and as streams, headers, request controls,
tenants, pass-through endpoints and metrics. The upstream is tests/fake_upstream.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from fake_upstream import FakeUpstream
from proxy_support import Proxy, make_proxy, upstream, user  # noqa: F401 - fixtures

ASKED = "How do I reset my password?"
PARAPHRASE = "how can I reset my password"


def ask(proxy: Proxy, text: str, **kwargs: object) -> tuple[dict[str, str], str]:
    raw = proxy.client(**{k: kwargs.pop(k) for k in ("api_key",) if k in kwargs}) \
        .chat.completions.with_raw_response.create(model="m1", messages=user(text), **kwargs)
    proxy.settle()  # stored before the next (maybe paraphrased) question is asked
    return dict(raw.headers), raw.parse().choices[0].message.content


def test_miss_then_paraphrase_hit_as_json(make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy()
    headers, first = ask(proxy, ASKED)
    assert headers["x-prism-cache"] == "miss" and first == f"reply #1 to: {ASKED}" or \
        first.endswith(ASKED)
    headers, second = ask(proxy, PARAPHRASE)
    assert headers["x-prism-cache"] == "hit"
    assert second == first
    assert 0.5 <= float(headers["x-prism-similarity"]) < 1.0
    assert headers["x-prism-category"] == "loose"
    assert len(headers["x-prism-entry"]) == 16 and int(headers["x-prism-entry"], 16) > 0
    assert int(headers["x-prism-age"]) >= 0
    assert upstream.generations == 1


def test_stream_is_recorded_then_replayed_to_a_paraphrase(make_proxy, upstream) -> None:
    proxy = make_proxy()
    client = proxy.client()
    with client.chat.completions.with_streaming_response.create(
            model="m1", messages=user(ASKED), stream=True) as raw:
        assert raw.headers["x-prism-cache"] == "miss"
        streamed = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert streamed.endswith(ASKED)
    proxy.settle()  # a paraphrase (unlike an identical request) does not wait for the store
    with client.chat.completions.with_streaming_response.create(
            model="m1", messages=user(PARAPHRASE), stream=True) as raw:
        assert raw.headers["x-prism-cache"] == "hit"
        chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == streamed
    # the same entry, asked without streaming: a completion object assembled from the chunks
    headers, text = ask(proxy, PARAPHRASE)
    assert headers["x-prism-cache"] == "hit" and text == streamed
    assert upstream.generations == 1


def test_json_entry_replayed_as_a_well_formed_stream(make_proxy, upstream) -> None:
    proxy = make_proxy()
    _, text = ask(proxy, ASKED)
    with proxy.http() as http:
        raw = http.post("/v1/chat/completions", json={
            "model": "m1", "messages": user(PARAPHRASE), "stream": True,
            "stream_options": {"include_usage": True}})
    assert raw.headers["x-prism-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    # the openai client reads the same stream
    stream = proxy.client().chat.completions.create(
        model="m1", messages=user(PARAPHRASE), stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
    assert upstream.generations == 1


def test_async_client_streaming_and_not(make_proxy, upstream) -> None:
    proxy = make_proxy()

    async def run() -> tuple[str, str, str]:
        client = proxy.aclient()
        first = await client.chat.completions.create(model="m1", messages=user(ASKED))
        proxy.settle()
        stream = await client.chat.completions.create(
            model="m1", messages=user(PARAPHRASE), stream=True)
        replayed = "".join([c.choices[0].delta.content or "" async for c in stream])
        again = await client.chat.completions.create(model="m1", messages=user(PARAPHRASE))
        await client.close()
        return first.choices[0].message.content, replayed, again.choices[0].message.content

    first, replayed, again = asyncio.run(run())
    assert first == replayed == again
    assert upstream.generations == 1


def test_text_completions_are_cached_too(make_proxy, upstream) -> None:
    proxy = make_proxy()
    client = proxy.client()
    first = client.completions.create(model="m1", prompt="Write a haiku about the sea").choices[0]
    stream = client.completions.create(model="m1", prompt="write a haiku about the sea",
                                       stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == first.text
    assert upstream.calls["completions"] == 1


def test_tenants_never_share_entries(make_proxy, upstream) -> None:
    proxy = make_proxy()
    headers_a, text_a = ask(proxy, ASKED, api_key="sk-tenant-a")
    headers_b, text_b = ask(proxy, ASKED, api_key="sk-tenant-b")
    assert headers_b["x-prism-cache"] == "miss" and text_b != text_a
    assert ask(proxy, ASKED, api_key="sk-tenant-a")[1] == text_a
    assert ask(proxy, ASKED, api_key="sk-tenant-b")[1] == text_b
    assert upstream.generations == 2
    # pass-through mode forwards each client's own key
    assert upstream.authorizations == ["Bearer sk-tenant-a", "Bearer sk-tenant-b"]


def test_configured_tenants_map_keys_and_refuse_strangers(make_proxy, upstream) -> None:
    proxy = make_proxy(server={
        "tenants": [{"tenant": "acme", "key": "sk-acme-1"}, {"tenant": "acme", "key": "sk-acme-2"},
                    {"tenant": "globex", "key_env": "GLOBEX_KEY"}],
        "upstream_api_key_env": "UPSTREAM_KEY"},
        environ={"GLOBEX_KEY": "sk-globex", "UPSTREAM_KEY": "sk-upstream-secret"})
    _, text = ask(proxy, ASKED, api_key="sk-acme-1")
    headers, again = ask(proxy, ASKED, api_key="sk-acme-2")  # same tenant, other key
    assert headers["x-prism-cache"] == "hit" and again == text
    assert ask(proxy, ASKED, api_key="sk-globex")[0]["x-prism-cache"] == "miss"
    import openai
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(proxy, ASKED, api_key="sk-stranger")
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    # the proxy's own key goes upstream, never a client's; and it is never echoed
    assert set(upstream.authorizations) == {"Bearer sk-upstream-secret"}
    with proxy.http() as http:
        everything = http.get("/metrics").text + str(http.post(
            "/v1/chat/completions", headers={"authorization": "Bearer sk-acme-1"},
            json={"model": "m1", "messages": user(ASKED)}).headers)
    assert "sk-upstream-secret" not in everything and "sk-acme" not in everything


def test_cache_control_no_cache_and_no_store(make_proxy, upstream) -> None:
    proxy = make_proxy()
    client = proxy.client()
    _, first = ask(proxy, ASKED)
    fresh = client.chat.completions.with_raw_response.create(
        model="m1", messages=user(ASKED), extra_headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-prism-cache"] == "miss"
    second = fresh.parse().choices[0].message.content
    assert second != first
    assert ask(proxy, ASKED)[1] == second  # the fresh answer replaced the stored one
    not_kept = client.chat.completions.create(
        model="m1", messages=user("what is a kettle"), extra_headers={"Cache-Control": "no-store"})
    headers, again = ask(proxy, "what is a kettle")
    assert headers["x-prism-cache"] == "miss" and again != not_kept.choices[0].message.content
    assert upstream.generations == 4


def test_explicit_category_header(make_proxy) -> None:
    proxy = make_proxy()
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m1", messages=user(ASKED), extra_headers={"X-Prism-Category": "strict"})
    assert raw.headers["x-prism-category"] == "strict"
    headers, _ = ask(proxy, PARAPHRASE)  # a paraphrase in strict (0.99) does not hit
    assert headers["x-prism-cache"] == "miss"
    assert proxy.cache.stats()["strict"].entries == 1


@pytest.mark.parametrize("extra", [{"n": 2}, {"temperature": 1.5}])
def test_sampling_requests_bypass_the_cache(make_proxy, upstream, extra) -> None:
    proxy = make_proxy()
    for _ in range(2):
        with proxy.http() as http:
            raw = http.post("/v1/chat/completions",
                            json={"model": "m1", "messages": user(ASKED), **extra})
        assert raw.status_code == 200 and raw.headers["x-prism-cache"] == "bypass"
    assert upstream.generations == 2 and proxy.entries() == 0


def test_tool_calls_are_never_cached(make_proxy, upstream) -> None:
    proxy = make_proxy()
    upstream.behaviour.tool_call = True
    client = proxy.client()
    first = client.chat.completions.create(model="m1", messages=user(ASKED))
    assert first.choices[0].message.tool_calls[0].function.name == "lookup"
    list(client.chat.completions.create(model="m1", messages=user("call it"), stream=True))
    assert ask(proxy, ASKED)[0]["x-prism-cache"] == "miss"
    assert proxy.entries() == 0 and upstream.generations == 3


def test_embeddings_and_models_pass_through(make_proxy, upstream) -> None:
    proxy = make_proxy()
    client = proxy.client()
    assert client.embeddings.create(model="e1", input=["a", "b"]).data[1].embedding == \
        [0.5, -0.5, 0.25]
    assert [m.id for m in client.models.list()] == ["m1"]
    assert upstream.calls["embeddings"] == 1 and upstream.calls["models"] == 1
    assert proxy.entries() == 0


def test_healthz_and_metrics(make_proxy) -> None:
    proxy = make_proxy()
    ask(proxy, ASKED)
    ask(proxy, PARAPHRASE)
    with httpx.Client(base_url=proxy.root) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        text = http.get("/metrics").text
    tenant = 'tenant="other'  # pass-through tenants (hashed keys) are never labels
    assert 'prismcache_requests_total{endpoint="chat",' + tenant in text
    assert 'category="loose",cache="hit"} 1' in text
    assert 'category="loose",cache="miss"} 1' in text
    for name in ("prismcache_hit_seconds_bucket", "prismcache_miss_overhead_seconds_count",
                 "prismcache_upstream_seconds_sum", "prismcache_tokens_saved_total",
                 "prismcache_usd_saved_total", 'prismcache_entries{category="loose"} 1'):
        assert name in text
