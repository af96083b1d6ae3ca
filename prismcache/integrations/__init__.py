"""Caching inside the frameworks applications already use, on the proxy's rules.

* :func:`wrap` — an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client whose
  ``chat.completions.create`` answers from the cache (:mod:`.openai_client`);
* :class:`prismcache.langchain.SemanticLLMCache` — LangChain's ``set_llm_cache`` backend;
* LiteLLM — point its OpenAI-compatible provider at ``prismcache serve`` (docs/integrations.md).

Every integration keys requests with :func:`prismcache.request.key_request` and admits answers
with :meth:`prismcache.SemanticCache.store` (:func:`prismcache.responses.uncacheable_reason`)
and :class:`prismcache.streams.StreamRecord`, as the proxy does: none has rules of its own.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prismcache.cache import SemanticCache

__all__ = ["wrap"]

Client = TypeVar("Client")


def wrap(client: Client, *, cache: SemanticCache, tenant: str = "default",
         category: str | None = None) -> Client:
    """A cached view of an ``openai`` client: ``chat.completions.create`` (sync or async,
    streaming or not) answers from ``cache`` in ``tenant``'s partition when it may, and
    otherwise calls ``client`` and offers the answer to the cache under the proxy's rules;
    everything else is ``client``'s own.

    Returned objects are the ``openai`` types (``ChatCompletion``; a ``Stream`` or
    ``AsyncStream`` of ``ChatCompletionChunk``). ``category`` names the category of every
    call (else each request is classified). Raises ``ValueError`` for an empty tenant or an
    unknown category, ``TypeError`` for a client that is not an ``openai`` client, and
    ``ImportError`` (naming ``pip install 'prismcache[openai]'``) without the ``openai``
    package.

    >>> import openai                                                  # doctest: +SKIP
    >>> client = wrap(openai.OpenAI(), cache=SemanticCache.open(), tenant="acme")  # doctest: +SKIP
    >>> client.chat.completions.create(model="gpt-4o-mini",            # doctest: +SKIP
    ...     messages=[{"role": "user", "content": "How do I reset my password?"}])
    """
    from prismcache.integrations.openai_client import wrap_client

    wrapped: Any = wrap_client(client, cache=cache, tenant=tenant, category=category)
    return wrapped  # type: ignore[no-any-return]
