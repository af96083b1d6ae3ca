"""Multi-turn requests through the proxy with the real ``openai`` client (streamed and not):
follow-ups hit across contexts that mean the same, never across contexts that differ, nor
across tenants; verbatim conversations hit the exact tier. The upstream is
tests/fake_upstream.py."""

from __future__ import annotations

import asyncio
from typing import Any

from fake_upstream import FakeUpstream
from proxy_support import Proxy, make_proxy, upstream  # noqa: F401 - fixtures

FOLLOW_UP = "how long does that take?"
SEMANTIC = {"categories": {"loose": {"threshold": 0.5, "ttl": "1h", "quota": 0.5,
                                     "context": "semantic", "context_threshold": 0.6}}}


def talk(first: str, follow_up: str = FOLLOW_UP) -> list[dict[str, Any]]:
    return [{"role": "user", "content": first},
            {"role": "assistant", "content": "Sure, I can help with that."},
            {"role": "user", "content": follow_up}]


def ask(proxy: Proxy, messages: list[dict[str, Any]], api_key: str = "sk-client-a"
        ) -> tuple[str, str]:
    raw = proxy.client(api_key=api_key).chat.completions.with_raw_response.create(
        model="m1", messages=messages)  # type: ignore[arg-type]
    return raw.headers["x-prism-cache"], raw.parse().choices[0].message.content or ""


def ask_streaming(proxy: Proxy, messages: list[dict[str, Any]]) -> tuple[str, str]:
    with proxy.client().chat.completions.with_streaming_response.create(
            model="m1", messages=messages, stream=True) as raw:  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        return raw.headers["x-prism-cache"], text


def test_a_follow_up_hits_across_a_reworded_context_never_across_another(
        make_proxy, upstream: FakeUpstream) -> None:
    proxy = make_proxy(SEMANTIC)
    state, first = ask(proxy, talk("I want to cancel my Visa card"))
    assert state == "miss"
    assert ask(proxy, talk("i want to cancel my visa card please")) == ("hit", first)
    assert ask(proxy, talk("I want to cancel my Visa card")) == ("hit", first)
    for other in ("I want to cancel my Mastercard", "I don't want to cancel my Visa card"):
        state, text = ask(proxy, talk(other))
        assert state == "miss" and text != first, other
    assert ask(proxy, [{"role": "user", "content": FOLLOW_UP}])[0] == "miss"
    assert upstream.generations == 4


def test_streamed_follow_ups_are_recorded_and_replayed(make_proxy, upstream) -> None:
    proxy = make_proxy(SEMANTIC)
    state, streamed = ask_streaming(proxy, talk("I want to cancel my Visa card"))
    assert state == "miss" and streamed
    assert ask_streaming(proxy, talk("i want to cancel my visa card please")) == ("hit", streamed)
    assert ask(proxy, talk("i want to cancel my visa card please")) == ("hit", streamed)
    assert ask_streaming(proxy, talk("I want to cancel my Mastercard"))[0] == "miss"
    assert upstream.generations == 2


def test_exact_contexts_and_tenants_with_the_async_client(make_proxy, upstream) -> None:
    proxy = make_proxy()  # the loose category keeps contexts exact

    async def run() -> list[str]:
        a, b = proxy.aclient(api_key="sk-tenant-a"), proxy.aclient(api_key="sk-tenant-b")
        texts = []
        for client, first in ((a, "I want to cancel my Visa card"),
                              (a, "I want to cancel my Visa card"),
                              (a, "i want to cancel my visa card please"),
                              (b, "I want to cancel my Visa card")):
            done = await client.chat.completions.create(
                model="m1", messages=talk(first))  # type: ignore[arg-type]
            texts.append(done.choices[0].message.content or "")
        await a.close()
        await b.close()
        return texts

    texts = asyncio.run(run())
    assert texts[0] == texts[1]  # the verbatim conversation: exact tier
    assert texts[2] != texts[0]  # reworded turns, exact context: a miss
    assert texts[3] != texts[0]  # another tenant never sees it
    assert upstream.generations == 3
