"""prismcache.langchain.SemanticLLMCache with the real langchain-core and its fake models."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("langchain_core", reason="langchain-core is not installed "
                                             "(pip install 'prismcache[langchain]')")

from conftest import FakeClock  # noqa: E402
from integration_support import PARAPHRASE, PASSWORD, cache, entries  # noqa: E402, F401
from langchain_core.globals import set_llm_cache  # noqa: E402
from langchain_core.language_models import (  # noqa: E402
    FakeListChatModel,
    FakeListLLM,
    GenericFakeChatModel,
)
from langchain_core.language_models.fake_chat_models import FakeListChatModelError  # noqa: E402
from langchain_core.load import dumps  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, Generation  # noqa: E402

from prismcache import SemanticCache  # noqa: E402
from prismcache.langchain import SemanticLLMCache, request_body  # noqa: E402
from prismcache.request import key_request  # noqa: E402

@pytest.fixture
def llm_cache(cache: SemanticCache) -> SemanticLLMCache:
    return SemanticLLMCache(cache, tenant="acme")


def chat(llm_cache: SemanticLLMCache | None, *answers: str) -> FakeListChatModel:
    """A fake chat model answering ``answers`` in turn; ``model.i`` counts its calls (up to
    the number of answers, then it starts again)."""
    return FakeListChatModel(responses=list(answers) or ["first", "second", "third", "fourth"],
                             cache=llm_cache)


def test_a_paraphrase_is_served_from_the_cache(llm_cache: SemanticLLMCache,
                                               cache: SemanticCache) -> None:
    model = chat(llm_cache)
    assert model.invoke(PASSWORD).content == "first"
    assert model.invoke(PARAPHRASE).content == "first"
    assert model.i == 1  # the model was asked once
    assert cache.stats()["loose"].hits == 1


def test_set_llm_cache_caches_every_model(llm_cache: SemanticLLMCache) -> None:
    set_llm_cache(llm_cache)
    try:
        model = chat(None)
        model.invoke(PASSWORD)
        assert model.invoke(PARAPHRASE).content == "first"
    finally:
        set_llm_cache(None)


def test_another_tenant_model_or_setting_is_not_served(llm_cache: SemanticLLMCache,
                                                       cache: SemanticCache) -> None:
    model = chat(llm_cache)
    model.invoke(PASSWORD)
    assert chat(SemanticLLMCache(cache, tenant="globex")).invoke(PASSWORD).content == "first"
    assert chat(llm_cache, "other").invoke(PARAPHRASE).content == "other"  # another model
    assert model.invoke(PARAPHRASE, stop=["\n"]).content == "second"  # another setting
    assert model.invoke(PARAPHRASE, temperature=0.5).content == "third"  # sampling class
    assert entries(cache) == 5


def test_the_system_prompt_and_earlier_turns_are_context(llm_cache: SemanticLLMCache) -> None:
    model = chat(llm_cache)
    brief = [SystemMessage("Answer briefly."), HumanMessage(PASSWORD)]
    assert model.invoke(brief).content == "first"
    assert model.invoke([SystemMessage("Answer briefly."), HumanMessage(PARAPHRASE)]
                        ).content == "first"
    assert model.invoke([SystemMessage("Answer at length."), HumanMessage(PARAPHRASE)]
                        ).content == "second"
    history = [HumanMessage("I use the mobile app."), AIMessage("OK."), HumanMessage(PASSWORD)]
    assert model.invoke(history).content == "third"
    assert model.i == 3


def test_generations_round_trip_exactly(llm_cache: SemanticLLMCache) -> None:
    message = AIMessage(
        content="Use the reset link.", id="run-1", name="helper",
        additional_kwargs={"refusal": None},
        response_metadata={"finish_reason": "stop", "model_name": "m1", "system_fingerprint": "fp"},
        usage_metadata={"input_tokens": 5, "output_tokens": 4, "total_tokens": 9})
    generations = [ChatGeneration(message=message, generation_info={"finish_reason": "stop",
                                                                     "logprobs": None})]
    prompt = dumps([SystemMessage("Be kind."), HumanMessage(PASSWORD)])
    llm_string = "[('_type', 'fake'), ('model', 'm1'), ('stop', None)]"
    llm_cache.update(prompt, llm_string, generations)
    paraphrased = dumps([SystemMessage("Be kind."), HumanMessage(PARAPHRASE)])
    served = llm_cache.lookup(paraphrased, llm_string)
    assert isinstance(served, list) and served == generations
    assert type(served[0]) is ChatGeneration and served[0].message.usage_metadata == \
        message.usage_metadata
    text = [Generation(text="Paris.", generation_info={"finish_reason": "stop"})]
    llm_cache.update("What is the capital of France?", llm_string, text)
    assert llm_cache.lookup("what is the capital of France", llm_string) == text


def test_a_streamed_call_round_trips(llm_cache: SemanticLLMCache, cache: SemanticCache) -> None:
    answers = iter([AIMessage("Use the reset link on the sign-in page.")])
    model = GenericFakeChatModel(messages=answers, cache=llm_cache)
    streamed = model.invoke(PASSWORD, stream=True)  # recorded through _stream, chunk by chunk
    assert entries(cache) == 1
    again = model.invoke(PARAPHRASE)  # the iterator is spent: only the cache can answer
    assert again.content == streamed.content == "Use the reset link on the sign-in page."
    assert asyncio.run(model.ainvoke(PARAPHRASE, stream=True)).content == streamed.content


def test_an_llm_is_cached_as_a_text_completion(llm_cache: SemanticLLMCache,
                                               cache: SemanticCache) -> None:
    llm = FakeListLLM(responses=["one", "two"], cache=llm_cache)
    assert llm.invoke(PASSWORD) == "one"
    assert llm.invoke(PARAPHRASE) == "one"
    assert llm.i == 1
    (entry,) = cache.document_store.scan()
    assert entry.response["object"] == "text_completion" and entry.request["prompt"] == PASSWORD


@pytest.mark.parametrize("metadata", [
    {"finish_reason": "length"}, {"finish_reason": "content_filter"},
    {"stop_reason": "max_tokens"}, {"finish_reason": "SAFETY"},
])
def test_nothing_truncated_or_filtered_is_stored(llm_cache: SemanticLLMCache,
                                                 cache: SemanticCache,
                                                 metadata: dict[str, str]) -> None:
    answers = iter([AIMessage("Use the", response_metadata=metadata), AIMessage("fresh")])
    model = GenericFakeChatModel(messages=answers, cache=llm_cache)
    model.invoke(PASSWORD)
    assert entries(cache) == 0
    assert model.invoke(PASSWORD).content == "fresh"


def test_tool_calls_and_several_generations_are_not_stored(llm_cache: SemanticLLMCache,
                                                           cache: SemanticCache) -> None:
    call = AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "call_1"}])
    model = GenericFakeChatModel(messages=iter([call]), cache=llm_cache)
    model.invoke(PASSWORD)
    prompt, llm_string = dumps([HumanMessage(PASSWORD)]), "[('_type', 'fake')]"
    two = [ChatGeneration(message=AIMessage("a")), ChatGeneration(message=AIMessage("b"))]
    llm_cache.update(prompt, llm_string, two)
    assert entries(cache) == 0


def test_a_failing_model_leaves_nothing_stored(llm_cache: SemanticLLMCache,
                                               cache: SemanticCache) -> None:
    model = FakeListChatModel(responses=["never whole"], error_on_chunk_number=1,
                              cache=llm_cache)
    with pytest.raises(FakeListChatModelError):
        model.invoke(PASSWORD, stream=True)
    assert entries(cache) == 0


def test_bypassed_requests_are_neither_served_nor_stored(llm_cache: SemanticLLMCache,
                                                         cache: SemanticCache) -> None:
    model = chat(llm_cache)
    model.invoke(PASSWORD, temperature=1.5)  # hotter than limits.max_temperature
    model.invoke(PASSWORD, n=3)
    model.invoke([HumanMessage(PASSWORD), AIMessage("Sure,")])  # a prefill: last turn not user
    assert entries(cache) == 0 and model.i == 3


def test_clear_invalidates_the_tenant_only(cache: SemanticCache,
                                           llm_cache: SemanticLLMCache) -> None:
    globex = SemanticLLMCache(cache, tenant="globex")
    chat(llm_cache).invoke(PASSWORD)
    chat(globex).invoke(PASSWORD)
    llm_cache.clear()
    assert entries(cache) == 1
    assert chat(llm_cache, "fresh").invoke(PASSWORD).content == "fresh"
    asyncio.run(globex.aclear())
    assert chat(globex, "fresh").invoke(PASSWORD).content == "fresh"
    with pytest.raises(TypeError):
        llm_cache.clear(tenant="globex")


def test_ttl_and_category(cache: SemanticCache, clock: FakeClock) -> None:
    strict = SemanticLLMCache(cache, tenant="acme", category="strict")
    model = chat(strict)
    model.invoke(PASSWORD)
    assert model.invoke(PARAPHRASE).content == "second"  # below the strict 0.99
    assert model.invoke(PASSWORD.upper()).content == "first"  # the exact tier
    clock.tick(3601)
    assert model.invoke(PASSWORD).content == "third"  # expired
    with pytest.raises(ValueError, match="unknown category"):
        SemanticLLMCache(cache, category="nope")


def test_the_async_methods(llm_cache: SemanticLLMCache) -> None:
    model = chat(llm_cache)

    async def run() -> list[Any]:
        first = await model.ainvoke(PASSWORD)
        second = await model.ainvoke(PARAPHRASE)
        return [first.content, second.content]

    assert asyncio.run(run()) == ["first", "first"]
    assert model.i == 1


def test_llm_string_maps_onto_the_openai_request() -> None:
    # what ChatOpenAI's llm_string looks like: the serialised model, then the call's params
    model = {"lc": 1, "type": "constructor",
             "id": ["langchain", "chat_models", "openai", "ChatOpenAI"],
             "kwargs": {"model_name": "gpt-4o-mini", "temperature": 0.0, "max_retries": 2,
                        "top_k": 3, "openai_api_key": {"lc": 1, "type": "secret",
                                                       "id": ["OPENAI_API_KEY"]}}}
    params = {"stop": ["---"], "stream": True, "tools": [{"type": "function"}]}
    llm_string = json.dumps(model, sort_keys=True) + "---" + str(sorted(params.items()))
    prompt = dumps([SystemMessage("Be brief."), HumanMessage(PASSWORD)])
    body = request_body(prompt, llm_string)
    assert body is not None
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": PASSWORD}]
    assert (body["temperature"], body["stop"], body["tools"]) == (0.0, ["---"],
                                                                   [{"type": "function"}])
    identity = json.loads(body["metadata"]["prism_partition"])
    assert identity["settings"]["top_k"] == 3  # a setting OpenAI has no name for
    assert "stream" not in identity["settings"] and "max_retries" not in identity["settings"]

    def partition(llm: str) -> str:
        key_body = request_body(prompt, llm)
        assert key_body is not None
        return key_request(key_body, tenant="t").partition

    streamed_again = llm_string.replace("('stream', True)", "('stream', False)")
    assert partition(streamed_again) == partition(llm_string)
    assert partition(llm_string.replace('"top_k": 3', '"top_k": 4')) != partition(llm_string)
    assert partition("not a repr [") != partition("not a repr (")  # verbatim identity
    # serialised messages that do not load are never read as text
    assert request_body('[{"lc": 1, "type": "constructor", "id": ["os", "system"]}]',
                        llm_string) is None


def test_doctests() -> None:
    import doctest

    import prismcache.langchain
    import prismcache.streams

    for module in (prismcache.langchain, prismcache.streams):
        assert doctest.testmod(module).failed == 0
