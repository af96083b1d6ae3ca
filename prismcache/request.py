"""From an OpenAI request body to the keys the cache looks it up by.

A request is cached under two keys:

* the **partition**: an exact hash of everything that changes what a correct answer is, other
  than the wording of the last user turn — tenant, endpoint, model, the whole conversation
  before the last user turn (system prompt included), tools, response format and the sampling
  settings. No lookup ever crosses a partition, so tenants, models and conversations never see
  each other's entries, whatever their embeddings say;
* the **exact key**: a hash of the partition and the *normalised* last user turn, which answers
  verbatim repeats without embedding anything.

Requests the cache must not answer (``n > 1``, a temperature above the bound, non-text
content, a last turn that is not the user's) are keyed with a ``bypass`` reason instead of
raising: they are valid requests, just not cacheable ones. Bodies the cache cannot key at all
raise :class:`~prismcache.errors.RequestError`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prismcache.errors import RequestError

__all__ = ["PreparedRequest", "RequestKey", "RequestLimits", "key_request", "normalise",
           "parse_body", "prepare_request"]

# Request fields that change what a correct answer is. Everything else (stream, user,
# metadata, stream_options, ...) does not, and is left out of the partition.
_PARTITION_FIELDS = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "top_p",
    "stop",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
    "suffix",
    "echo",
    "best_of",
)
_WS = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.。？！]+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestLimits:
    """Bounds on what a request may carry.

    Attributes:
        max_query_bytes: the last user turn's UTF-8 size above which the request is refused
            with :class:`RequestError`.
        max_semantic_chars: longer last turns are matched by the exact tier only: the embedder
            reads a bounded window, so two long prompts that differ past it would look alike.
        max_temperature: requests sampled hotter than this bypass the cache (the caller asked
            for variety, not a stored answer).
    """

    max_query_bytes: int = 64 * 1024
    max_semantic_chars: int = 1000
    max_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.max_query_bytes <= 0:
            raise ValueError(f"max_query_bytes must be positive, got {self.max_query_bytes}")
        if self.max_semantic_chars < 0:
            raise ValueError(f"max_semantic_chars must be >= 0, got {self.max_semantic_chars}")
        if self.max_temperature < 0:
            raise ValueError(f"max_temperature must be >= 0, got {self.max_temperature}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestKey:
    """How one request is cached.

    Attributes:
        tenant: the tenant it belongs to.
        model: the model it names.
        partition: hex digest of the partition key.
        exact_key: hex digest of (partition, normalised query).
        query: the last user turn as sent.
        semantic: whether the query may be matched by similarity (not only exactly).
        category: the category the request names explicitly (``metadata.prism_category``),
            else ``None``.
        bypass: why the cache must neither serve nor store this request, else ``None``.
    """

    tenant: str
    model: str
    partition: str
    exact_key: str
    query: str
    semantic: bool = True
    category: str | None = None
    bypass: str | None = None


def parse_body(body: Mapping[str, Any] | bytes | str) -> Mapping[str, Any]:
    """Return ``body`` as a mapping, decoding bytes as strict UTF-8 JSON.

    Raises :class:`RequestError` for invalid UTF-8, malformed JSON, or a JSON value that is not
    an object.
    """
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise RequestError(f"request body is not valid JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(body, Mapping):
        raise RequestError(f"request body must be a JSON object, not {type(body).__name__}")
    return body


def normalise(text: str) -> str:
    """The exact tier's view of a query: NFKC, case-folded, whitespace collapsed, trailing
    punctuation dropped. ``normalise("How do I  reset it?") == normalise("how do i reset it")``.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return _TRAILING.sub("", _WS.sub(" ", text).strip())


def key_request(
    body: Mapping[str, Any] | bytes | str,
    *,
    tenant: str,
    limits: RequestLimits = RequestLimits(),  # noqa: B008 - frozen value object
) -> RequestKey:
    """Key a chat-completions (``messages``) or completions (``prompt``) request body.

    Raises :class:`RequestError` when the body has no model, no messages/prompt, an empty or
    oversized last user turn, or text that is not valid Unicode (lone surrogates, as left by
    decoding invalid UTF-8 with ``surrogateescape``).

    >>> k = key_request({"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
    ...                 tenant="acme")
    >>> (k.query, k.bypass, len(k.partition))
    ('Hi', None, 32)
    """
    if not isinstance(tenant, str) or not tenant:
        raise RequestError("tenant must be a non-empty string")
    body = parse_body(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("request has no 'model' string")

    if "messages" in body:
        endpoint = "chat"
        context, query, bypass = _split_messages(body["messages"])
    elif "prompt" in body:
        endpoint = "completions"
        context, query, bypass = None, _prompt_text(body["prompt"]), None
    else:
        raise RequestError("request has neither 'messages' nor 'prompt'")

    if bypass is None or query:
        _check_text(query, limits)
    bypass = bypass or _sampling_bypass(body, limits)

    partition_doc = {
        "tenant": tenant,
        "endpoint": endpoint,
        "model": model,
        "context": context,
        "sampling": _sampling_class(body.get("temperature")),
        **{name: body[name] for name in _PARTITION_FIELDS if name in body},
    }
    partition = _digest(_canonical(partition_doc))
    exact_key = _digest(partition + "\x00" + normalise(query))
    metadata = body.get("metadata")
    category = metadata.get("prism_category") if isinstance(metadata, Mapping) else None
    return RequestKey(
        tenant=tenant,
        model=model,
        partition=partition,
        exact_key=exact_key,
        query=query,
        semantic=len(query) <= limits.max_semantic_chars,
        category=category if isinstance(category, str) and category else None,
        bypass=bypass,
    )


def _split_messages(messages: Any) -> tuple[list[Any], str, str | None]:
    """Split a messages list into (context before the last user turn, its text, bypass)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    for message in messages:
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestError("every message must be an object with a 'role' string")
    last = messages[-1]
    if last["role"] != "user":
        # A request ending in an assistant or tool turn continues a tool loop or a prefill:
        # its answer depends on that turn, which is not what the cache keys on.
        return messages, "", f"last message is a {last['role']!r} turn"
    text, bypass = _content_text(last.get("content"))
    return list(messages[:-1]), text, bypass


def _content_text(content: Any) -> tuple[str, str | None]:
    if isinstance(content, str):
        return content, None
    if isinstance(content, list):
        texts, other = [], False
        for part in content:
            if not isinstance(part, Mapping):
                raise RequestError("content parts must be objects")
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                other = True
        return "\n".join(texts), ("non-text content" if other else None)
    raise RequestError("the last user message has no text 'content'")


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    raise RequestError("'prompt' must be a string (batched prompts are not cached)")


def _check_text(query: str, limits: RequestLimits) -> None:
    try:
        size = len(query.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise RequestError(
            f"the last user turn is not valid Unicode (character {exc.start}); "
            "was it decoded from invalid UTF-8?"
        ) from None
    if size > limits.max_query_bytes:
        raise RequestError(
            f"the last user turn is {size:,} bytes; the limit is "
            f"{limits.max_query_bytes:,} (limits.max_query_bytes)"
        )
    if not query.strip():
        raise RequestError("the last user turn is empty" if not query else "the last user turn is blank")


def _sampling_bypass(body: Mapping[str, Any], limits: RequestLimits) -> str | None:
    n = body.get("n", 1)
    if n is not None and n != 1:
        return f"n={n} asks for several samples"
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            raise RequestError("'temperature' must be a number")
        if temperature > limits.max_temperature:
            return f"temperature {temperature} is above the bound {limits.max_temperature}"
    return None


def _sampling_class(temperature: Any) -> str:
    # Greedy and sampled decoding are different distributions of answers; within "sampled",
    # any stored sample is as good an answer as a fresh one.
    return "greedy" if not temperature else "sampled"


def _canonical(doc: Any) -> str:
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"request is not JSON-serialisable: {exc}") from None


def _digest(text: str) -> str:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            f"the request context is not valid Unicode (character {exc.start})"
        ) from None
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request parsed and keyed once, then handed on: the proxy prepares it while
    validating, and :meth:`SemanticCache.lookup` and :meth:`~SemanticCache.store` take it as
    it is instead of parsing and keying the body again.

    Attributes:
        body: the parsed request body.
        key: how it is cached (:class:`RequestKey`).
    """

    body: Mapping[str, Any]
    key: RequestKey


def prepare_request(
    body: Mapping[str, Any] | bytes | str,
    *,
    tenant: str,
    limits: RequestLimits = RequestLimits(),  # noqa: B008 - frozen value object
) -> PreparedRequest:
    """Parse and key ``body`` once (:func:`parse_body`, :func:`key_request`); raises
    :class:`RequestError` as they do."""
    parsed = parse_body(body)
    return PreparedRequest(body=parsed, key=key_request(parsed, tenant=tenant, limits=limits))
