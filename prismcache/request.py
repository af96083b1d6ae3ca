"""From an OpenAI request body to the keys the cache looks it up by.

A request is cached under two keys:

* the **partition**: an exact hash of everything that may change what a correct answer is,
  other than the wording of the conversation — tenant, endpoint, model, the system (and
  developer) messages wherever they stand, the sampling class, and
  every other request field (tools, response format, guided decoding, fields prismcache does
  not know) except a short list known not to matter (``stream``, ``user``, ``metadata``,
  ...), and ``metadata.prism_partition`` when given (what else must match exactly: the
  LangChain cache puts a model's whole configuration there). No lookup ever crosses a
  partition, so tenants, models and conversations never see each other's entries, whatever
  their embeddings say;
* the **exact key**: a hash of the partition, the conversation context's key and the
  *normalised* last user turn, which answers verbatim repeats without embedding anything.

The earlier **conversation turns** (every message before the last user turn that is not a
system or developer message) are not in the partition: they are the request's
:class:`Context`, compared per category exactly (its ``key``) or by meaning (its user turns;
see :mod:`prismcache.decision` and ``docs/conversations.md``). A single-turn request has no
context (``None``), and its partition and exact key are what they were before contexts existed.

Requests the cache must not answer (``n > 1``, a temperature above the bound, non-text
content, a last turn that is not the user's) are keyed with a ``bypass`` reason instead of
raising: they are valid requests, just not cacheable ones. Bodies the cache cannot key at all
raise :class:`~prismcache.errors.RequestError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prismcache.errors import RequestError

#: a request body as callers hand it over: parsed JSON, or its raw bytes or text
Body = Mapping[str, Any] | bytes | str

__all__ = ["Body", "Context", "PreparedRequest", "RequestKey", "RequestLimits", "context_of",
           "key_request", "normalise", "parse_body", "parse_json", "prepare_request"]

# The partition holds every request field except these, which are known not to change what a
# correct answer is (how it is delivered, who asked, bookkeeping at the provider). A field not
# listed here, including one prismcache has never heard of (vLLM's guided_choice, a new OpenAI
# option), is part of the partition: an unknown field may change the answer, so it must split.
_UNKEYED_FIELDS = frozenset({
    "stream",  # delivery: a streamed answer is the same answer
    "stream_options",  # delivery (include_usage)
    "user",  # who asked (abuse monitoring), not what
    "safety_identifier",  # the same, under its newer name
    "metadata",  # bookkeeping; prismcache reads metadata.prism_category itself
    "store",  # whether the provider keeps a copy
    "service_tier",  # latency and price class, same model
    "prompt_cache_key",  # a hint for the provider's own prompt cache
})
# Fields keyed in their own way: the question and its context, the model, and sampling
# (``n`` other than 1 bypasses the cache; ``temperature`` sorts into a sampling class).
_OWN_FIELDS = frozenset({"model", "messages", "prompt", "n", "temperature"})
# What OpenAI-compatible servers sample at when a request names no temperature.
DEFAULT_TEMPERATURE = 1.0
# Messages that set up the model rather than converse: they stay in the hard partition.
_SETUP_ROLES = frozenset({"system", "developer"})
# Conversation turns that may be compared by meaning; any other role (tool, function) carries
# data the words of the user turns do not show, so its context is compared exactly.
_TEXT_ROLES = frozenset({"user", "assistant"})
# A context turn's weight halves with each user turn that came after it.
CONTEXT_DECAY = 0.5
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
class Context:
    """The conversation before the last user turn, minus its system/developer messages.

    Attributes:
        key: hex digest of the turns exactly as sent (roles, contents, tool calls): what
            ``context: exact`` compares, and part of the exact key.
        turns: the user turns' texts, oldest first: what ``context: semantic`` embeds.
        text: the user turns as sentences (each ending in ``.`` unless it ends a sentence
            already, joined by newlines): what the lexical guards compare. Assistant turns
            are left out: sampled replies word the same content differently; what they say
            is taken to follow from the user turns, the system prompt and the model, which
            do match (a tool result does not follow: it makes the context exact).
        semantic: whether it may be compared by meaning at all: ``False`` when a turn is not
            plain text (tool calls, tool results, images) or a user turn is longer than
            ``limits.max_semantic_chars`` (the embedder would not read all of it); such a
            context is compared exactly whatever the category says.
    """

    key: str
    turns: tuple[str, ...]
    text: str
    semantic: bool

    def weights(self) -> list[float]:
        """Per user turn (oldest first): its word count, halved per later user turn — the
        most recent, substantive turns dominate; "thanks!" weighs little."""
        n = len(self.turns)
        return [max(1, len(turn.split())) * CONTEXT_DECAY ** (n - 1 - i)
                for i, turn in enumerate(self.turns)]


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
        context: the conversation before the last user turn (:class:`Context`), ``None`` for
            a single-turn request.
    """

    tenant: str
    model: str
    partition: str
    exact_key: str
    query: str
    semantic: bool = True
    category: str | None = None
    bypass: str | None = None
    context: Context | None = None


def parse_json(text: str | bytes) -> Any:
    """Decode strict JSON: UTF-8, no ``NaN``/``Infinity`` literals, no object with the same
    key twice (parsers disagree on which one wins, so the question the cache keys could differ
    from the one the upstream answers), and nesting shallow enough to parse.

    Raises :class:`RequestError` naming the problem.

    >>> parse_json('{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    prismcache.errors.RequestError: request body is not valid JSON: duplicate key 'a'
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise RequestError("request body is not valid JSON: nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RequestError(f"request body is not valid JSON: duplicate key {key!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise RequestError(f"request body is not valid JSON: {name} is not a JSON number")


def parse_body(body: Body) -> Mapping[str, Any]:
    """Return ``body`` as a mapping, decoding bytes or text with :func:`parse_json`.

    Raises :class:`RequestError` for invalid UTF-8, malformed JSON, or a JSON value that is not
    an object.
    """
    if isinstance(body, bytes | bytearray | str):
        body = parse_json(body)
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
    body: Body,
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

    context: Context | None = None
    if "messages" in body:
        endpoint = "chat"
        earlier, query, bypass = _split_messages(body["messages"])
        setup = [m for m in earlier if m["role"] in _SETUP_ROLES]
        if len(setup) < len(earlier):
            context = _context([m for m in earlier if m["role"] not in _SETUP_ROLES], limits)
    elif "prompt" in body:
        endpoint = "completions"
        setup, (query, bypass) = None, _prompt_text(body["prompt"])
    else:
        raise RequestError("request has neither 'messages' nor 'prompt'")

    if bypass is None or query:
        _check_text(query, limits)
    bypass = bypass or _sampling_bypass(body, limits)

    metadata = body.get("metadata")
    partition_doc = {
        "tenant": tenant,
        "endpoint": endpoint,
        "model": model,
        "context": setup,  # named so: single-turn partitions are what they always were
        "sampling": _sampling_class(_temperature(body)),
        "fields": {name: value for name, value in body.items()
                   if name not in _UNKEYED_FIELDS and name not in _OWN_FIELDS},
    }
    if isinstance(metadata, Mapping) and "prism_partition" in metadata:
        partition_doc["prism_partition"] = metadata["prism_partition"]
    partition = _digest(_canonical(partition_doc))
    exact_key = _digest(partition + "\x00" + normalise(query) if context is None
                        else partition + "\x00" + context.key + "\x00" + normalise(query))
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
        context=context,
    )


def context_of(body: Mapping[str, Any], *,
               limits: RequestLimits = RequestLimits()) -> Context | None:
    """The :class:`Context` of a stored or incoming chat request body, as :func:`key_request`
    computes it (``None`` for a single-turn or completions request, or a body that cannot be
    keyed). Candidates' contexts are re-derived from their stored request with it, so old
    entries need no new stored field."""
    try:
        earlier, _, _ = _split_messages(body.get("messages"))
    except RequestError:
        return None
    turns = [m for m in earlier if m["role"] not in _SETUP_ROLES]
    return _context(turns, limits) if turns else None


def _context(turns: list[Any], limits: RequestLimits) -> Context:
    """The context of the non-setup messages before the last user turn (at least one)."""
    users: list[str] = []
    semantic = True
    for message in turns:
        try:
            text, other = _content_text(message.get("content", ""))
        except RequestError:  # no text content (a tool call's null): compared exactly
            text, other = "", "no text"
        plain = (message["role"] in _TEXT_ROLES and other is None
                 and not any(k in message for k in ("tool_calls", "function_call")))
        semantic = semantic and plain
        if message["role"] == "user":
            users.append(text)
            semantic = semantic and len(text) <= limits.max_semantic_chars
    sentences = (t if t.rstrip()[-1:] in ".?!" else t.rstrip() + "." for t in users)
    return Context(key=_digest(_canonical(turns)), turns=tuple(users), text="\n".join(sentences),
                   semantic=semantic and bool(users))


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


def _prompt_text(prompt: Any) -> tuple[str, str | None]:
    """(text, bypass) of a completions ``prompt``: a string (or a list of one) is keyed; a
    batch of strings or token ids is a valid request the cache does not answer."""
    if isinstance(prompt, str):
        return prompt, None
    if isinstance(prompt, list) and prompt:
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0], None
        if all(isinstance(p, str) for p in prompt):
            return "", "batched prompts"
        if all(_token_ids(p) for p in prompt) or _token_ids(prompt):
            return "", "token-id prompt"
    raise RequestError("'prompt' must be a string, a list of strings, a list of token ids "
                       "or a list of lists of token ids")


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


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
    temperature = _temperature(body)
    if temperature > limits.max_temperature:
        return f"temperature {temperature} is above the bound {limits.max_temperature}"
    return None


def _temperature(body: Mapping[str, Any]) -> float:
    """The temperature the upstream will sample at: OpenAI-compatible servers take an absent
    (or null) temperature as 1.0. Raises :class:`RequestError` unless it is a finite number
    >= 0 (NaN and infinities would be forwarded as whatever the upstream makes of them)."""
    temperature = body.get("temperature")
    if temperature is None:
        return DEFAULT_TEMPERATURE
    if not isinstance(temperature, int | float) or isinstance(temperature, bool):
        raise RequestError("'temperature' must be a number")
    if not math.isfinite(temperature) or temperature < 0:
        raise RequestError(f"'temperature' must be a finite number >= 0, got {temperature}")
    return float(temperature)


def _sampling_class(temperature: float) -> str:
    # Greedy and sampled decoding are different distributions of answers; within "sampled",
    # any stored sample is as good an answer as a fresh one. Only an explicit 0 is greedy.
    return "greedy" if temperature == 0 else "sampled"


def _canonical(doc: Any) -> str:
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"request is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise RequestError("request is nested too deeply") from None


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
    body: Body,
    *,
    tenant: str,
    limits: RequestLimits = RequestLimits(),  # noqa: B008 - frozen value object
) -> PreparedRequest:
    """Parse and key ``body`` once (:func:`parse_body`, :func:`key_request`); raises
    :class:`RequestError` as they do."""
    parsed = parse_body(body)
    return PreparedRequest(body=parsed, key=key_request(parsed, tenant=tenant, limits=limits))
