"""Streamed answers as chunk objects: recording a stream, assembling its chunks into the
completion a non-streaming request would have got, and the chunks that replay a stored one.

Shared by every way prismcache sees an upstream answer (the proxy reads server-sent events, the
wrapped ``openai`` client reads ``ChatCompletionChunk`` objects), so that what counts as a
complete, storable stream is decided in one place: :class:`StreamRecord`. A stream is
*complete* when its end was seen, every event was a JSON chunk without an ``error``, and every
choice got a ``finish_reason``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["StreamRecord", "assemble", "completion_of", "replay_chunks"]

_PIECE = re.compile(r"\S*\s*")
_PIECE_CHARS = 48  # synthesised content chunks: a few words each, like a model's stream


class StreamRecord:
    """The chunks of one streamed answer, recorded as they pass to the client.

    Call :meth:`add` with every event, :meth:`finish` when the stream's end is seen (``data:
    [DONE]`` on the wire; the normal end of the ``openai`` client's iteration), then
    :meth:`answer` for the completion to offer the cache. A stream that broke off, carried an
    error event or a non-JSON event, or left a choice unfinished has no answer.

    >>> record = StreamRecord()
    >>> chunk = record.add('{"object": "chat.completion.chunk", "choices": [{"index": 0, '
    ...                    '"delta": {"content": "Hi"}, "finish_reason": "stop"}]}')
    >>> record.answer() is None          # the end was not seen yet
    True
    >>> record.finish()
    >>> record.answer()["choices"][0]["message"]["content"]
    'Hi'
    """

    def __init__(self) -> None:
        self.chunks: list[dict[str, Any]] = []
        self.valid = True
        self.complete = False

    def add(self, event: str | Mapping[str, Any]) -> dict[str, Any] | None:
        """Record one event: its JSON text, or the chunk object already parsed. Returns the
        chunk recorded, or ``None`` for an event that is not one (the record is then invalid)."""
        if isinstance(event, str):
            try:
                event = json.loads(event)
            except ValueError:
                event = None
        if isinstance(event, Mapping) and "error" not in event:
            chunk = dict(event)
            self.chunks.append(chunk)
            return chunk
        self.valid = False
        return None

    def finish(self) -> None:
        """Note that the stream ended as it should (not cut off)."""
        self.complete = True

    def answer(self) -> dict[str, Any] | None:
        """The assembled completion of a complete, valid stream, else ``None``."""
        return assemble(self.chunks) if self.complete and self.valid else None


def completion_of(response: Mapping[str, Any],
                  chunks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The completion object a stored entry answers a non-streaming request with: its
    ``response``, or, when only its stream was kept, the stream assembled."""
    if response.get("choices"):
        return dict(response)
    return assemble(chunks or []) or {}


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Assemble recorded ``chat.completion.chunk`` or ``text_completion`` chunks into the
    completion object a non-streaming request would have got; ``None`` when the chunks do not
    make one (no choices, or a choice without a ``finish_reason``)."""
    if not chunks:
        return None
    first = chunks[0]
    chat = first.get("object") == "chat.completion.chunk" or any(
        "delta" in c for chunk in chunks for c in chunk.get("choices") or ())
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for part in chunk.get("choices") or ():
            if not isinstance(part, Mapping):
                return None
            index = part.get("index", 0)
            choice = choices.setdefault(index, {"index": index, "pieces": [], "tools": {}})
            if chat:
                _merge_delta(choice, part.get("delta") or {})
            elif isinstance(part.get("text"), str):
                choice["pieces"].append(part["text"])
            if part.get("finish_reason") is not None:
                choice["finish_reason"] = part["finish_reason"]
            if part.get("logprobs") is not None:
                choice.setdefault("logprobs", []).append(part["logprobs"])
    if not choices or any("finish_reason" not in c for c in choices.values()):
        return None
    out: dict[str, Any] = {
        "id": first.get("id"), "object": "chat.completion" if chat else "text_completion",
        "created": first.get("created"), "model": first.get("model"),
        "choices": [_finish_choice(choices[i], chat) for i in sorted(choices)],
    }
    if first.get("system_fingerprint") is not None:
        out["system_fingerprint"] = first["system_fingerprint"]
    if usage is not None:
        out["usage"] = usage
    return out


def _merge_delta(choice: dict[str, Any], delta: Mapping[str, Any]) -> None:
    if delta.get("role"):
        choice["role"] = delta["role"]
    if isinstance(delta.get("content"), str):
        choice["pieces"].append(delta["content"])
    if delta.get("refusal"):
        choice["refusal"] = choice.get("refusal", "") + delta["refusal"]
    for call in delta.get("tool_calls") or ():
        slot = choice["tools"].setdefault(call.get("index", 0), {
            "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        slot["id"] = call.get("id") or slot["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""
    if delta.get("function_call"):
        choice["function_call"] = delta["function_call"]


def _finish_choice(choice: dict[str, Any], chat: bool) -> dict[str, Any]:
    text = "".join(choice["pieces"])
    out: dict[str, Any] = {"index": choice["index"]}
    if chat:
        message: dict[str, Any] = {"role": choice.get("role", "assistant"),
                                   "content": text if choice["pieces"] else None}
        if choice["tools"]:
            message["tool_calls"] = [choice["tools"][i] for i in sorted(choice["tools"])]
        for name in ("refusal", "function_call"):
            if name in choice:
                message[name] = choice[name]
        out["message"] = message
    else:
        out["text"] = text
    out["logprobs"] = None
    out["finish_reason"] = choice["finish_reason"]
    return out


def replay_chunks(response: Mapping[str, Any], chunks: list[dict[str, Any]] | None = None, *,
                  include_usage: bool = False) -> Iterator[dict[str, Any]]:
    """The chunk objects that replay a stored completion to a streaming client.

    Recorded ``chunks`` are replayed as they were (a usage-only chunk only when the client
    asked for ``stream_options.include_usage``); otherwise the stream is synthesised from the
    completion object: a role chunk, content chunks of a few words, a finish chunk.
    """
    if chunks:
        for chunk in chunks:
            if chunk.get("choices") or include_usage:
                yield chunk
    else:
        yield from _synthesise(response, include_usage)


def _synthesise(response: Mapping[str, Any], include_usage: bool
                ) -> Iterator[dict[str, Any]]:
    chat = response.get("object") != "text_completion"
    head: dict[str, Any] = {
        "id": response.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
        "created": response.get("created"), "model": response.get("model"),
    }
    if response.get("system_fingerprint") is not None:
        head["system_fingerprint"] = response["system_fingerprint"]

    def chunk(body: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, **body, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    choice = (response.get("choices") or [{}])[0]
    if chat:
        message = choice.get("message") or {}
        text = message.get("content") or ""
        yield chunk({"delta": {"role": message.get("role", "assistant"), "content": ""}})
        for piece in _pieces(text):
            yield chunk({"delta": {"content": piece}})
        yield chunk({"delta": {}}, choice.get("finish_reason") or "stop")
    else:
        for piece in _pieces(choice.get("text") or ""):
            yield chunk({"text": piece})
        yield chunk({"text": ""}, choice.get("finish_reason") or "stop")
    if include_usage and response.get("usage") is not None:
        yield {**head, "choices": [], "usage": response["usage"]}


def _pieces(text: str) -> Iterator[str]:
    piece = ""
    for word in _PIECE.findall(text):
        piece += word
        if len(piece) >= _PIECE_CHARS:
            yield piece
            piece = ""
    if piece:
        yield piece
