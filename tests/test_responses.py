"""The one rule of which upstream answers may be stored (prismcache/responses.py)."""

from __future__ import annotations

from typing import Any

import pytest

from prismcache.responses import uncacheable_reason


def answer(message: dict[str, Any] | None = None, finish: str | None = "stop") -> dict[str, Any]:
    msg = {"role": "assistant", "content": "Paris.", **(message or {})}
    return {"object": "chat.completion",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}]}


def test_a_plain_answer_may_be_stored() -> None:
    assert uncacheable_reason(answer()) is None
    assert uncacheable_reason(answer(finish=None)) is None  # servers that omit it
    assert uncacheable_reason({"choices": [{"text": "x", "finish_reason": "stop"}]}) is None


@pytest.mark.parametrize("response,why", [
    (answer(finish="content_filter"), "filtered"),
    (answer(finish="abort"), "did not finish normally"),
    (answer(finish="length"), "truncated"),
    (answer({"refusal": "I can't help with that."}), "refusal"),
    (answer({"audio": {"id": "audio_1", "expires_at": 1}}), "audio"),
    (answer({"content": "  "}), "empty"),
    (answer({"content": None}), "empty"),
    (answer({"tool_calls": [{"id": "c"}]}), "tool"),
    ({"error": {"message": "x"}}, "error"),
    ({"choices": []}, "exactly one choice"),
])
def test_answers_nobody_wants_replayed_are_refused(response: Any, why: str) -> None:
    assert why in (uncacheable_reason(response) or "")


def test_truncation_can_be_allowed_but_filtering_cannot() -> None:
    assert uncacheable_reason(answer(finish="length"), allow_truncated=True) is None
    assert uncacheable_reason(answer(finish="content_filter"), allow_truncated=True)
