"""Which upstream responses may be stored, and what a hit on them saves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["completion_tokens", "response_text", "uncacheable_reason"]


# The finish reasons of a whole answer the model chose to end. Anything else is not stored:
# "length" (cut off, unless allowed), "content_filter" (withheld or cut by a moderation
# filter), "tool_calls"/"function_call", and whatever a server invents for an aborted or
# failed generation ("abort", "error", ...).
_COMPLETE = frozenset({"stop", "eos", "end_turn", "stop_sequence"})


def uncacheable_reason(response: Any, *, allow_truncated: bool = False) -> str | None:
    """Why ``response`` must not be stored, or ``None`` when it may be.

    The one rule of what is never replayed: anything that is not a completion object with
    exactly one choice; error objects; tool or function calls (their meaning depends on the
    caller's tools' state); a ``finish_reason`` other than a normal stop (``content_filter``,
    ``abort``, ... ; ``length`` unless ``allow_truncated``); refusals (``message.refusal``: a
    moderation decision about one request, not an answer to its question); audio output (its
    id expires); and an empty answer.

    >>> uncacheable_reason({"choices": [{"message": {"content": "hi"},
    ...                                  "finish_reason": "content_filter"}]})
    'response was filtered (finish_reason=content_filter)'

    Every way into the cache (the proxy, the wrapped ``openai`` client, the LangChain cache)
    reaches this rule through :meth:`~prismcache.SemanticCache.store`.
    """
    if not isinstance(response, Mapping):
        return "response is not an object"
    if "error" in response:
        return "response is an error"
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], Mapping):
        return "response does not have exactly one choice"
    choice = choices[0]
    reason = choice.get("finish_reason")
    message = choice.get("message")
    if reason in ("tool_calls", "function_call"):
        return "response calls a tool"
    if isinstance(message, Mapping) and (message.get("tool_calls") or message.get("function_call")):
        return "response calls a tool"
    if reason == "length":
        if not allow_truncated:
            return "response was truncated (finish_reason=length)"
    elif reason == "content_filter":
        return "response was filtered (finish_reason=content_filter)"
    elif reason is not None and reason not in _COMPLETE:
        return f"response did not finish normally (finish_reason={reason})"
    if isinstance(message, Mapping):
        if message.get("refusal"):
            return "response is a refusal"
        if message.get("audio"):
            return "response carries audio (its id expires)"
        text = message.get("content")
    elif "text" in choice:
        text = choice.get("text")
    else:
        return "response has no message"
    if not isinstance(text, str) or not text.strip():
        return "response is empty"
    return None


def completion_tokens(response: Mapping[str, Any]) -> int:
    """Tokens the upstream generated (``usage``), else an estimate of ~4 characters a token."""
    usage = response.get("usage")
    if isinstance(usage, Mapping) and isinstance(usage.get("total_tokens"), int):
        return usage["total_tokens"]
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") if isinstance(choice, Mapping) else None
    text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
    return max(1, len(text or "") // 4)


def response_text(response: Mapping[str, Any]) -> str | None:
    """The first choice's text (``message.content`` or completions' ``text``), or ``None``."""
    choices = response.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, Mapping):
        return None
    message = choice.get("message")
    text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
    return text if isinstance(text, str) else None
