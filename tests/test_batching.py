"""BatchingEmbedder: concurrent callers share one model call, each gets its own rows, a failed
batch fails every caller (and the cache fails open for each, counted), a lone caller never
waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from conftest import chat

from prismcache.embedders import BatchingEmbedder, Embedder, HashEmbedder
from prismcache.errors import EmbeddingError


class GatedEmbedder:
    """A HashEmbedder whose first call blocks until :attr:`gate` is set, recording every
    batch it is given; it fails any batch containing ``"boom"`` (an in-memory test double)."""

    def __init__(self, dim: int = 32) -> None:
        self.inner = HashEmbedder(dim=dim)
        self.name, self.dim = self.inner.name, dim
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    @property
    def id(self) -> str:
        return self.inner.id

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            self.gate.wait(10)
        if "boom" in texts:
            raise EmbeddingError("the model fell over (test)")
        return self.inner.embed(texts)


def _queued(embedder: BatchingEmbedder) -> int:
    with embedder._lock:
        return len(embedder._queue)


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)


def _run_concurrently(embedder: BatchingEmbedder, gated: GatedEmbedder,
                      inputs: list[list[str]]) -> list[Any]:
    """Start a first caller (held inside the model), queue ``inputs`` behind it, release it;
    return the first caller's result then each input's (an array or the exception)."""
    results: list[Any] = [None] * (len(inputs) + 1)

    def call(i: int, texts: list[str]) -> None:
        try:
            results[i] = embedder.embed(texts)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    first = threading.Thread(target=call, args=(0, ["the first caller"]))
    first.start()
    _wait_until(lambda: len(gated.batches) == 1)
    threads = [threading.Thread(target=call, args=(i + 1, texts))
               for i, texts in enumerate(inputs)]
    for thread in threads:
        thread.start()
    _wait_until(lambda: _queued(embedder) == len(inputs))
    gated.gate.set()
    for thread in [first, *threads]:
        thread.join(10)
    return results


def test_concurrent_callers_share_one_call_and_each_gets_its_own_rows() -> None:
    gated = GatedEmbedder()
    embedder = BatchingEmbedder(gated, max_wait=0.0, max_batch=64)
    inputs = [[f"question number {i}"] for i in range(6)] + [["two texts", "in one call"]]
    results = _run_concurrently(embedder, gated, inputs)
    alone = HashEmbedder(dim=32)
    assert np.array_equal(results[0], alone.embed(["the first caller"]))
    for texts, vectors in zip(inputs, results[1:], strict=True):
        assert vectors.shape == (len(texts), 32)
        assert np.array_equal(vectors, alone.embed(texts))
    # the first call, then everything that queued behind it in one call
    assert len(gated.batches) == 2
    assert sorted(gated.batches[1]) == sorted(t for texts in inputs for t in texts)
    assert (embedder.calls, embedder.batches, embedder.largest) == (8, 2, 7)


def test_stats_count_batch_sizes_texts_and_model_time() -> None:
    gated = GatedEmbedder()
    embedder = BatchingEmbedder(gated, max_wait=0.0, max_batch=64)
    inputs = [[f"question number {i}"] for i in range(4)] + [["two texts", "in one call"]]
    _run_concurrently(embedder, gated, inputs)
    stats = embedder.stats()
    assert {k: stats[k] for k in ("calls", "batches", "failures", "texts", "largest")} == {
        "calls": 6, "batches": 2, "failures": 0, "texts": 7, "largest": 5}
    assert stats["mean_batch"] == 3.5
    assert stats["sizes"] == {"1": 1, "8": 1}  # 1 text, then 6 (rounded up to 8)
    assert stats["ms_per_text"] > 0 and stats["cpu_ms_per_text"] >= 0


def test_max_batch_splits_the_queue_and_every_caller_is_served() -> None:
    gated = GatedEmbedder()
    embedder = BatchingEmbedder(gated, max_wait=0.0, max_batch=3)
    inputs = [[f"query {i}"] for i in range(7)]
    results = _run_concurrently(embedder, gated, inputs)
    alone = HashEmbedder(dim=32)
    for texts, vectors in zip(inputs, results[1:], strict=True):
        assert np.array_equal(vectors, alone.embed(texts))
    assert [len(batch) for batch in gated.batches] == [1, 3, 3, 1]


def test_a_failing_batch_fails_every_caller_in_it_and_only_them() -> None:
    gated = GatedEmbedder()
    embedder = BatchingEmbedder(gated, max_wait=0.0, max_batch=64)
    inputs = [["fine"], ["boom"], ["also fine", "and this"]]
    results = _run_concurrently(embedder, gated, inputs)
    assert isinstance(results[0], np.ndarray)  # the first caller's batch was its own
    for result in results[1:]:
        assert isinstance(result, EmbeddingError)
        assert "fell over" in str(result)
    assert len({id(result) for result in results[1:]}) == 3  # one exception per caller
    assert embedder.failures == 1
    assert embedder.embed(["afterwards"]).shape == (1, 32)  # the next batch works


def test_with_concurrency_two_a_second_caller_does_not_queue_behind_the_first() -> None:
    gated = GatedEmbedder()
    embedder = BatchingEmbedder(gated, max_wait=0.0, concurrency=2)
    first = threading.Thread(target=embedder.embed, args=(["held in the model"],))
    first.start()
    _wait_until(lambda: len(gated.batches) == 1)
    assert embedder.embed(["not held"]).shape == (1, 32)  # ran beside the first call
    gated.gate.set()
    first.join(10)
    assert gated.batches == [["held in the model"], ["not held"]]


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_many_threads_with_waits_each_get_exactly_their_own_rows(concurrency: int) -> None:
    embedder = BatchingEmbedder(HashEmbedder(dim=32), max_wait=0.002, max_batch=5,
                                concurrency=concurrency)
    alone = HashEmbedder(dim=32)
    wrong: list[str] = []
    barrier = threading.Barrier(12)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(40):
            texts = [f"thread {k} call {i} text {j}" for j in range(1 + (k + i) % 3)]
            if not np.array_equal(embedder.embed(texts), alone.embed(texts)):
                wrong.append(texts[0])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []
    assert embedder.calls == 12 * 40


def test_a_lone_caller_does_not_wait() -> None:
    embedder = BatchingEmbedder(HashEmbedder(dim=32), max_wait=5.0)
    started = time.monotonic()
    for _ in range(3):
        embedder.embed(["alone"])
    assert time.monotonic() - started < 2.5  # a wait would have taken 5 s per call
    assert embedder.batches == 3


def test_a_large_single_input_goes_in_one_call() -> None:
    gated = GatedEmbedder()
    gated.gate.set()
    embedder = BatchingEmbedder(gated, max_batch=4)
    texts = [f"text {i}" for i in range(10)]
    assert np.array_equal(embedder.embed(texts), HashEmbedder(dim=32).embed(texts))
    assert gated.batches == [texts]


def test_it_is_an_embedder_with_the_inner_identity() -> None:
    inner = HashEmbedder(dim=16)
    embedder = BatchingEmbedder(inner)
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, embedder.id) == (inner.name, 16, inner.id)
    assert embedder.embed([]).shape == (0, 16)
    with pytest.raises(TypeError):
        embedder.embed("a bare string")
    with pytest.raises(ValueError, match="max_batch"):
        BatchingEmbedder(inner, max_batch=0)
    with pytest.raises(ValueError, match="max_wait"):
        BatchingEmbedder(inner, max_wait=-1)


def test_many_threads_through_a_cache_each_get_their_own_answer(make_cache: Any) -> None:
    embedder = BatchingEmbedder(HashEmbedder(dim=64), max_wait=0.001)
    cache = make_cache({"default_category": "strict"}, embedder=embedder)
    answers = {f"distinct question {i} about topic {i * 7}": f"answer {i}" for i in range(24)}
    for question, answer in answers.items():
        body = chat(question)
        cache.store(body, {"choices": [{"message": {"role": "assistant", "content": answer},
                                        "finish_reason": "stop"}]})
    cache._memo.clear()  # every lookup below embeds
    got: dict[str, str] = {}
    barrier = threading.Barrier(8)

    def worker(questions: list[str]) -> None:
        barrier.wait()
        for question in questions:
            # a paraphrase: a new text, so the exact tier misses and the vector decides
            hit = cache.lookup(chat(question + " ?"))
            got[question] = hit.response["choices"][0]["message"]["content"] if hit.hit else ""

    questions = list(answers)
    threads = [threading.Thread(target=worker, args=(questions[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert got == answers


def test_a_failing_batch_fails_open_for_each_lookup_counted(make_cache: Any) -> None:
    gated = GatedEmbedder(dim=64)
    embedder = BatchingEmbedder(gated, max_wait=0.0)
    cache = make_cache({"default_category": "loose"}, embedder=embedder)
    results: list[Any] = [None] * 4

    def look(i: int, text: str) -> None:
        results[i] = cache.lookup(chat(text))

    first = threading.Thread(target=look, args=(0, "held in the model"))
    first.start()
    _wait_until(lambda: len(gated.batches) == 1)
    others = [threading.Thread(target=look, args=(i, text))
              for i, text in enumerate(["boom", "a bystander", "another bystander"], 1)]
    for thread in others:
        thread.start()
    _wait_until(lambda: _queued(embedder) == 3)
    gated.gate.set()
    for thread in [first, *others]:
        thread.join(10)
    assert results[0].reason == "empty"
    assert [(r.reason, r.detail) for r in results[1:]] == [("error", "EmbeddingError")] * 3
    assert cache.stats()["loose"].errors == 3
