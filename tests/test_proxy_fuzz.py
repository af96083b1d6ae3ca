"""Whatever a client sends, the proxy answers it without a 5xx of its own and stays up
(hypothesis over request bodies, through a real uvicorn server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy_support import Proxy, make_proxy, upstream, user  # noqa: F401 - fixtures

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | values},
    optional={"content": st.text(max_size=40) | values,
              "tool_calls": values, "name": values}), max_size=3)
bodies = st.fixed_dictionaries(
    {"model": st.just("m1") | values},
    optional={"messages": messages | values, "prompt": st.text(max_size=40) | values,
              "temperature": values, "n": values, "stream": st.booleans() | values,
              "stream_options": values, "metadata": values, "stop": values,
              "tools": values, "max_tokens": values, "user": values})
endpoints = st.sampled_from(["/v1/chat/completions", "/v1/completions"])
headers = st.fixed_dictionaries({}, optional={
    "x-prism-category": st.sampled_from(["loose", "strict", "nope", ""]),
    "cache-control": st.sampled_from(["no-cache", "no-store", "max-age=0, no-cache", ",,"])})


@pytest.fixture
def proxy(make_proxy) -> Iterator[Proxy]:
    yield make_proxy()


def send(proxy: Proxy, path: str, content: bytes, extra: dict[str, str]) -> httpx.Response:
    with proxy.http() as http:
        return http.post(path, content=content,
                         headers={"content-type": "application/json", **extra})


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=endpoints, body=bodies, extra=headers)
def test_no_body_makes_the_proxy_fail(proxy: Proxy, path: str, body: dict[str, Any],
                                      extra: dict[str, str]) -> None:
    answer = send(proxy, path, json.dumps(body, allow_nan=True).encode(), extra)
    assert answer.status_code < 500, (answer.status_code, answer.text)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=endpoints, content=st.binary(max_size=200))
def test_no_bytes_make_the_proxy_fail(proxy: Proxy, path: str, content: bytes) -> None:
    answer = send(proxy, path, content, {})
    assert answer.status_code == 400, (answer.status_code, answer.text)


@pytest.mark.parametrize("content", [
    b"[" * 100_000,
    b'{"model": "m1", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b'{"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stop": '
    + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}",
    b'{"model": "m1", "model": "m2", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "m1", "messages": [{"role": "user", "content": "hi", "content": "bye"}]}',
])
def test_deep_nesting_and_duplicate_keys_are_400(proxy: Proxy, upstream, content: bytes) -> None:
    answer = send(proxy, "/v1/chat/completions", content, {})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert upstream.generations == 0
    with httpx.Client(base_url=proxy.root) as http:  # and it is still up
        assert http.get("/healthz").json()["status"] == "ok"


def test_deeply_nested_admin_body_is_a_400(make_proxy) -> None:
    proxy = make_proxy(server={"admin_token_env": "ADMIN"}, environ={"ADMIN": "t"})
    with httpx.Client(base_url=proxy.root, headers={"authorization": "Bearer t"}) as http:
        assert http.post("/admin/invalidate", content=b"[" * 100_000).status_code == 400
