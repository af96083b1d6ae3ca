"""Which upstream responses may be stored, and what a hit on them saves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["completion_tokens", "uncacheable_reason"]


def uncacheable_reason(response: Any, *, allow_truncated: bool = False) -> str | None:
    """Why ``response`` must not be stored, or ``None`` when it may be.

    Refused: anything that is not a completion object with exactly one choice; error
    objects; tool or function calls (their meaning depends on the caller's tools' state); an
    answer the provider's content filter withheld or cut (``finish_reason`` of
    ``"content_filter"``); and, unless ``allow_truncated``, a ``finish_reason`` of
    ``"length"`` (cut off).

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
    if reason == "length" and not allow_truncated:
        return "response was truncated (finish_reason=length)"
    if reason == "content_filter":
        return "response was filtered (finish_reason=content_filter)"
    if reason in ("tool_calls", "function_call"):
        return "response calls a tool"
    message = choice.get("message")
    if isinstance(message, Mapping) and (message.get("tool_calls") or message.get("function_call")):
        return "response calls a tool"
    if reason is None and "text" not in choice and not isinstance(message, Mapping):
        return "response has no message"
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
