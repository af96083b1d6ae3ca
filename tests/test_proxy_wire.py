"""The proxy's JSON encoding (``wire.json_bytes``): the bytes the standard library would write,
only faster; what orjson refuses falls back instead of failing."""

from __future__ import annotations

import doctest
import json
from typing import Any

import pytest

from prismcache.server import wire
from prismcache.server.sse import encode_event


def stdlib(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("body", [
    {"id": "cmpl-1", "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": "Grüße, 日本 🙂 \"q\"\n"}}],
     "usage": {"prompt_tokens": 5, "completion_tokens": 7}, "logprobs": None},
    {"x": [0.1, 123456.789, -0.0, 2**63 - 1, True, False, None, [], {}]},
    {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}},
])
def test_json_bytes_writes_what_the_standard_library_writes(body: Any) -> None:
    assert wire.json_bytes(body) == stdlib(body)


def test_exponents_may_be_spelt_differently_but_mean_the_same() -> None:
    body = {"logprob": -1.5e-7, "big": 1e300}
    assert json.loads(wire.json_bytes(body)) == body


def test_what_orjson_refuses_falls_back_to_the_standard_library() -> None:
    body = {"big": 2**70, "nested": {1: "int key"}}
    assert wire.json_bytes(body) == stdlib(body)
    with pytest.raises(TypeError):
        wire.json_bytes({"not json": object()})


def test_replayed_events_carry_the_same_bytes() -> None:
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "café"}}]}
    assert encode_event(chunk) == b"data: " + stdlib(chunk) + b"\n\n"
    assert encode_event('{"a":1}') == b'data: {"a":1}\n\n'


def test_wire_doctests() -> None:
    assert doctest.testmod(wire).failed == 0
