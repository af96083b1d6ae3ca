"""What the proxy keys a request on, through real HTTP: every field that may change the answer
splits the partition; only a short list of delivery and bookkeeping fields does not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fake_upstream import FakeUpstream
from proxy_support import Proxy, make_proxy, upstream, user  # noqa: F401 - fixtures

ASKED = "Is the sky blue?"


def post(proxy: Proxy, **fields: Any) -> httpx.Response:
    with proxy.http() as http:
        return http.post("/v1/chat/completions",
                         json={"model": "m1", "messages": user(ASKED), **fields})


@pytest.mark.parametrize("field", [
    {"guided_choice": ["yes", "no"]},
    {"guided_json": {"type": "object"}},
    {"structured_outputs": {"choice": ["yes", "no"]}},
    {"top_k": 5},
    {"min_p": 0.1},
    {"repetition_penalty": 1.2},
    {"chat_template_kwargs": {"enable_thinking": False}},
    {"modalities": ["text", "audio"]},
    {"audio": {"voice": "alloy", "format": "wav"}},
    {"parallel_tool_calls": False},
    {"verbosity": "low"},
    {"prediction": {"type": "content", "content": "yes"}},
    {"web_search_options": {}},
    {"reasoning_effort": "high"},
    {"some_field_nobody_knows": 1},
])
def test_a_field_that_may_change_the_answer_splits_the_partition(
        make_proxy, upstream: FakeUpstream, field: dict[str, Any]) -> None:
    proxy = make_proxy()
    free_text = post(proxy)
    assert free_text.headers["x-prism-cache"] == "miss"
    constrained = post(proxy, **field)
    assert constrained.headers["x-prism-cache"] == "miss"
    assert constrained.json()["choices"][0]["message"]["content"] != \
        free_text.json()["choices"][0]["message"]["content"]
    assert post(proxy, **field).headers["x-prism-cache"] == "hit"  # and keys consistently
    assert upstream.generations == 2


def test_delivery_and_bookkeeping_fields_do_not_split(make_proxy, upstream) -> None:
    proxy = make_proxy()
    post(proxy)
    same = post(proxy, user="u-17", metadata={"trace": "x"}, store=True,
                service_tier="flex", safety_identifier="s", prompt_cache_key="k",
                stream_options=None)
    assert same.headers["x-prism-cache"] == "hit"
    assert upstream.generations == 1


def test_greedy_answers_are_only_shared_with_explicit_temperature_zero(make_proxy,
                                                                       upstream) -> None:
    proxy = make_proxy()
    greedy = post(proxy, temperature=0)
    assert greedy.headers["x-prism-cache"] == "miss"
    # no temperature means the default, 1.0: sampled, not greedy
    default = post(proxy)
    assert default.headers["x-prism-cache"] == "miss"
    assert post(proxy, temperature=0.0).json() == greedy.json()
    assert post(proxy, temperature=0.7).json() == default.json()  # any sample will do
    assert post(proxy, temperature=None).json() == default.json()
    assert upstream.generations == 2


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"-0.5", b'"hot"'])
def test_temperature_must_be_a_finite_number(make_proxy, upstream, raw: bytes) -> None:
    proxy = make_proxy()
    body = b'{"model":"m1","messages":[{"role":"user","content":"hi"}],"temperature":' + raw + b"}"
    with proxy.http() as http:
        answer = http.post("/v1/chat/completions", content=body)
    message = answer.json()["error"]["message"]
    assert answer.status_code == 400
    assert "temperature" in message or "is not a JSON number" in message
    assert upstream.generations == 0


# -- smaller consistencies ----------------------------------------------------------------

def test_unknown_category_is_a_400_in_the_body_as_in_the_header(make_proxy, upstream) -> None:
    proxy = make_proxy()
    answer = post(proxy, metadata={"prism_category": "nope"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "metadata.prism_category"
    with proxy.http() as http:
        answer = http.post("/v1/chat/completions", headers={"x-prism-category": "nope"},
                           json={"model": "m1", "messages": user(ASKED)})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "X-Prism-Category"
    assert post(proxy, metadata={"prism_category": "strict"}).headers["x-prism-category"] == \
        "strict"
    assert upstream.generations == 1


def test_a_streamed_entry_gives_usage_to_a_non_streaming_client(make_proxy, upstream) -> None:
    proxy = make_proxy()
    with proxy.http() as http:
        streamed = http.post("/v1/chat/completions",
                             json={"model": "m1", "messages": user(ASKED), "stream": True})
    assert '"usage"' not in streamed.text  # the client did not ask for it
    hit = post(proxy)
    assert hit.headers["x-prism-cache"] == "hit"
    assert hit.json()["usage"]["total_tokens"] == 12
    with proxy.http() as http:
        replayed = http.post("/v1/chat/completions", json={
            "model": "m1", "messages": user(ASKED), "stream": True,
            "stream_options": {"include_usage": True}})
    assert '"total_tokens":12' in replayed.text.replace(" ", "")
