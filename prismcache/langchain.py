"""LangChain's LLM cache, backed by prismcache: ``set_llm_cache(SemanticLLMCache(cache=...))``.

LangChain asks its cache with two strings: the *prompt* (a chat model's messages serialised
with ``langchain_core.load.dumps``, or an LLM's prompt text) and the *llm_string* (the model's
class and every setting it was called with). :func:`request_body` maps them onto the OpenAI
request the cache keys, so the proxy's keying rule (:func:`prismcache.request.key_request`)
decides here too:

* chat messages stay messages: the system prompt and earlier turns are the context, which must
  match exactly; the last user turn is what is matched by meaning;
* the model name goes to ``model``; settings that have an OpenAI name (``temperature``,
  ``top_p``, ``stop``, ``max_tokens``, ``n``, ``tools``, ...) go to the same fields, so the
  proxy's rules apply to them (a hot temperature or ``n > 1`` bypasses the cache); and the
  whole configuration, less what cannot change an answer (``stream``, ``max_retries``,
  timeouts, callbacks), goes to ``metadata.prism_partition``, so *every* setting partitions.

Generations are stored as an OpenAI completion (so the admission rule,
:func:`prismcache.responses.uncacheable_reason`, refuses truncated, filtered, tool-calling and
multi-choice answers as it does in the proxy) that carries the generations, their messages
serialised with LangChain's ``message_to_dict``; a hit revives them exactly (``ChatGeneration``
with its message, metadata and usage).

>>> from langchain_core.globals import set_llm_cache             # doctest: +SKIP
>>> set_llm_cache(SemanticLLMCache(SemanticCache.open(), tenant="acme"))  # doctest: +SKIP

Needs ``pip install 'prismcache[langchain]'``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from prismcache.cache import SemanticCache
from prismcache.errors import RequestError
from prismcache.results import Hit

try:
    from langchain_core._api import suppress_langchain_beta_warning
    from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
    from langchain_core.load import load
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        convert_to_openai_messages,
        message_to_dict,
        messages_from_dict,
    )
    from langchain_core.outputs import (
        ChatGeneration,
        ChatGenerationChunk,
        Generation,
        GenerationChunk,
    )
except ImportError as exc:  # pragma: no cover - exercised by the import-hygiene test
    raise ImportError(
        "prismcache.langchain needs langchain-core: pip install 'prismcache[langchain]'"
    ) from exc

__all__ = ["SemanticLLMCache", "request_body"]

log = logging.getLogger("prismcache")

# The generation classes a stored entry may revive (and, through messages_from_dict, only
# message classes inside them: never a model, a prompt template or a secret).
_GENERATIONS: dict[str, type[Generation]] = {
    cls.__name__: cls for cls in (Generation, GenerationChunk, ChatGeneration, ChatGenerationChunk)}
# Settings LangChain puts in llm_string that cannot change what the model answers.
_TRANSPORT = frozenset({"stream", "streaming", "max_retries", "timeout", "request_timeout",
                        "callbacks", "callback_manager", "verbose", "tags", "cache",
                        "rate_limiter", "disable_streaming"})
# Settings named as in the OpenAI API: passed as those fields, so the proxy's rules see them.
_OPENAI_FIELDS = ("temperature", "top_p", "stop", "seed", "max_tokens", "max_completion_tokens",
                  "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                  "top_logprobs", "reasoning_effort", "n", "tools", "tool_choice",
                  "response_format")
_MODEL_FIELDS = ("model", "model_name", "model_id", "deployment_name", "azure_deployment")
_FINISH = {"length": "length", "max_tokens": "length", "max_output_tokens": "length",
           "content_filter": "content_filter", "safety": "content_filter",
           "recitation": "content_filter", "blocklist": "content_filter",
           "prohibited_content": "content_filter", "spii": "content_filter",
           "refusal": "content_filter", "tool_calls": "tool_calls", "tool_use": "tool_calls",
           "function_call": "tool_calls", "stop": "stop", "end_turn": "stop",
           "stop_sequence": "stop", "eos": "stop"}


class SemanticLLMCache(BaseCache):
    """A LangChain cache (``langchain_core.caches.BaseCache``) answering from a
    :class:`~prismcache.SemanticCache`, in one tenant's partition.

    ``category`` names the category of every call (else the cache classifies each prompt);
    categories' thresholds, TTLs and guards decide as they do in the proxy. Lookups and
    stores never raise for a prompt the cache cannot key: it is a miss, and nothing is
    stored.

    >>> from langchain_core.language_models import FakeListChatModel
    >>> cache = SemanticCache.open({"store": "memory://", "embedder": "hash:64",
    ...                              "classifier": {"examples": None}})
    >>> model = FakeListChatModel(responses=["Like so.", "Another way."],
    ...                           cache=SemanticLLMCache(cache, tenant="acme"))
    >>> model.invoke("How do I reset it?").content
    'Like so.'
    >>> model.invoke("How do I reset it?").content    # the second answer is never asked for
    'Like so.'
    >>> cache.close()
    """

    def __init__(self, cache: SemanticCache, *, tenant: str = "default",
                 category: str | None = None, allow_truncated: bool = False) -> None:
        """Raises ``ValueError`` for an empty tenant or a category the cache does not know."""
        if not isinstance(tenant, str) or not tenant:
            raise ValueError("tenant must be a non-empty string")
        if category is not None and category not in cache.config.categories:
            raise ValueError(f"unknown category {category!r}; known: "
                             f"{sorted(cache.config.categories)}")
        self.cache = cache
        self.tenant = tenant
        self.category = category
        self.allow_truncated = allow_truncated

    def __repr__(self) -> str:
        return f"SemanticLLMCache(tenant={self.tenant!r}, category={self.category!r})"

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """The stored generations that may answer ``prompt`` for this ``llm_string``, or
        ``None`` (a miss)."""
        body = request_body(prompt, llm_string)
        if body is None:
            return None
        try:
            result = self.cache.lookup(body, tenant=self.tenant, category=self.category)
        except RequestError as exc:
            log.debug("prismcache: LangChain prompt not cached: %s", exc)
            return None
        return generations_of(result) if isinstance(result, Hit) else None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Offer ``return_val`` to the cache as the answer to ``prompt``; the proxy's admission
        rule decides whether it is stored."""
        body = request_body(prompt, llm_string)
        if body is None:
            return
        try:
            stored = self.cache.store(body, response_of(body, return_val), tenant=self.tenant,
                                      category=self.category,
                                      allow_truncated=self.allow_truncated)
        except RequestError as exc:
            log.debug("prismcache: LangChain prompt not cached: %s", exc)
            return
        if not stored.stored:
            log.debug("prismcache: LangChain answer not cached: %s", stored.reason)

    def clear(self, **kwargs: Any) -> None:
        """Delete this tenant's entries (every entry of the tenant, whoever stored it: give the
        LangChain cache a tenant of its own). ``category=`` or ``model=`` narrow it."""
        unknown = set(kwargs) - {"category", "model"}
        if unknown:
            raise TypeError(f"clear() takes category= and model=, not {sorted(unknown)}")
        self.cache.invalidate(tenant=self.tenant, **kwargs)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """:meth:`lookup` in a worker thread (embedding blocks)."""
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """:meth:`update` in a worker thread."""
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        """:meth:`clear` in a worker thread."""
        await asyncio.to_thread(self.clear, **kwargs)


def request_body(prompt: str, llm_string: str) -> dict[str, Any] | None:
    """The OpenAI request body a LangChain ``(prompt, llm_string)`` pair is keyed as, or
    ``None`` when the prompt looks like serialised messages that cannot be read back (never
    cached: reading it as text would match conversations by meaning that must match exactly).

    LangChain asks with the same pair twice on a miss (lookup, then update), and with the same
    llm_string for every call of a model: both halves are parsed once and remembered.
    """
    model, fields, identity = _config(llm_string)
    messages = _chat_messages(prompt)
    if messages is False:
        return None
    body: dict[str, Any] = {"model": model}
    if messages is None:
        body["prompt"] = prompt
    else:
        body["messages"] = json.loads(messages)
    body.update(json.loads(fields))
    body["metadata"] = {"prism_partition": identity}
    return body


def response_of(body: Mapping[str, Any], generations: Sequence[Generation]) -> dict[str, Any]:
    """The OpenAI completion object ``generations`` are stored as: one choice a generation
    (their finish reasons and tool calls as OpenAI names them, for the admission rule), the
    usage, and the generations themselves under ``"langchain"`` (each message serialised with
    LangChain's ``message_to_dict``)."""
    chat = "messages" in body
    choices = [_choice(i, g, chat) for i, g in enumerate(generations)]
    response: dict[str, Any] = {
        "object": "chat.completion" if chat else "text_completion",
        "model": body.get("model"), "choices": choices,
        "langchain": {"generations": [_generation_dict(g) for g in generations]},
    }
    usage = _usage(generations)
    if usage is not None:
        response["usage"] = usage
    return response


def generations_of(hit: Hit) -> list[Generation]:
    """The generations a hit answers with: revived exactly when LangChain stored them, else
    built from the OpenAI completion's text."""
    stored = hit.response.get("langchain")
    if isinstance(stored, Mapping) and isinstance(stored.get("generations"), list):
        return [_generation(d) for d in stored["generations"]]
    out: list[Generation] = []
    for choice in hit.response.get("choices") or ():
        message = choice.get("message")
        if isinstance(message, Mapping):
            out.append(ChatGeneration(message=AIMessage(content=message.get("content") or "")))
        else:
            out.append(Generation(text=choice.get("text") or ""))
    return out


def _generation_dict(generation: Generation) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(generation).__name__,
                           "generation_info": generation.generation_info}
    if isinstance(generation, ChatGeneration):
        out["message"] = message_to_dict(generation.message)
    else:
        out["text"] = generation.text
    return out


def _generation(data: Mapping[str, Any]) -> Generation:
    cls = _GENERATIONS.get(data.get("type"), Generation)  # type: ignore[arg-type]
    info = data.get("generation_info")
    if issubclass(cls, ChatGeneration):
        (message,) = messages_from_dict([data["message"]])
        return cls(message=message, generation_info=info)
    return cls(text=data.get("text") or "", generation_info=info)


@lru_cache(maxsize=64)
def _config(llm_string: str) -> tuple[str, str, str]:
    """(model name, the OpenAI-named settings as JSON, the partition identity) of an llm_string.

    A serialisable model's llm_string is ``<model JSON>---<sorted params repr>``; another's is
    only the params repr. A string that does not parse is its own identity, verbatim."""
    model: dict[str, Any] = {}
    rest = llm_string
    try:
        if llm_string.startswith("{"):
            model, end = json.JSONDecoder().raw_decode(llm_string)
            rest = llm_string[end:].removeprefix("---")
        params = dict(ast.literal_eval(rest)) if rest else {}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return "langchain", "{}", llm_string
    kwargs = model.get("kwargs") if isinstance(model.get("kwargs"), dict) else {}
    settings = {**kwargs, **params}
    fields = {name: settings[name] for name in _OPENAI_FIELDS if settings.get(name) is not None}
    shaping = {k: v for k, v in settings.items() if k not in _TRANSPORT}
    identity = {"class": model.get("id"), "settings": shaping}
    return (_model_name(settings), json.dumps(fields, default=repr),
            json.dumps(identity, sort_keys=True, default=repr, ensure_ascii=False))


def _model_name(settings: Mapping[str, Any]) -> str:
    for name in _MODEL_FIELDS:
        if isinstance(settings.get(name), str) and settings[name]:
            return str(settings[name])
    kind = settings.get("_type")
    return str(kind) if isinstance(kind, str) and kind else "langchain"


@lru_cache(maxsize=256)
def _chat_messages(prompt: str) -> str | None | bool:
    """A chat prompt's messages in OpenAI form, as JSON; ``None`` for a plain-text prompt;
    ``False`` for serialised messages that do not load (only message classes may)."""
    if not prompt.startswith("[{"):
        return None
    try:
        data = json.loads(prompt)
    except ValueError:
        return None
    if not isinstance(data, list) or not all(isinstance(d, dict) and d.get("lc") == 1
                                             for d in data):
        return None
    try:
        with suppress_langchain_beta_warning():
            messages = load(data, allowed_objects="messages")
    except (ValueError, TypeError, KeyError) as exc:
        log.debug("prismcache: LangChain prompt not cached: its messages do not load (%s)", exc)
        return False
    if not all(isinstance(m, BaseMessage) for m in messages):
        return False
    return json.dumps(convert_to_openai_messages(messages), default=repr, ensure_ascii=False)


def _choice(index: int, generation: Generation, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "finish_reason": _finish_reason(generation)}
    if chat and isinstance(generation, ChatGeneration):
        choice["message"] = convert_to_openai_messages(generation.message)
    elif chat:
        choice["message"] = {"role": "assistant", "content": generation.text}
    else:
        choice["text"] = generation.text
    return choice


def _finish_reason(generation: Generation) -> str:
    """The generation's finish reason in OpenAI's words (providers name it differently)."""
    places: list[Any] = [generation.generation_info or {}]
    if isinstance(generation, ChatGeneration):
        places.append(generation.message.response_metadata)
    for place in places:
        for name in ("finish_reason", "stop_reason", "done_reason"):
            value = place.get(name) if isinstance(place, Mapping) else None
            if isinstance(value, str) and value:
                return _FINISH.get(value.lower(), value)
    return "stop"


def _usage(generations: Sequence[Generation]) -> dict[str, int] | None:
    if len(generations) != 1 or not isinstance(generations[0], ChatGeneration):
        return None
    usage = getattr(generations[0].message, "usage_metadata", None)
    if not usage:
        return None
    return {"prompt_tokens": usage.get("input_tokens", 0),
            "completion_tokens": usage.get("output_tokens", 0),
            "total_tokens": usage.get("total_tokens", 0)}
