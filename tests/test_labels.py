"""Labels from traffic (prismcache.labels): the store methods on every backend (memory, a real
SQLite file, a real redis-server), persistence across reopening, tenant isolation, the bound,
the answer-agreement rule and ``prismcache labels export``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from redis_support import RedisServer, redis_server, redis_url  # noqa: F401 - fixtures

from prismcache.cli import main
from prismcache.labels import AGREE_COSINE, Label, answers_agree
from prismcache.stores import DocumentStore, open_store
from prismcache.stores.base import DocumentStore as Protocol


def label(i: int, *, tenant: str = "acme", category: str = "faq", same: bool = True,
          probability: float | None = 0.7, source: str = "agreement") -> Label:
    return Label(tenant=tenant, category=category, query=f"query {i}", entry_id=i,
                 candidate=f"candidate {i}", similarity=0.8, probability=probability,
                 same=same, source=source, t=float(i))  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], DocumentStore]]:
    """Opens the same store again each call (a restart, for the persistent ones)."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/cache.db"
    else:
        url = request.getfixturevalue("redis_url")
    opened: list[DocumentStore] = []

    def open_() -> DocumentStore:
        store = open_store(url)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_labels_round_trip_in_order_per_tenant(opener: Callable[[], DocumentStore]) -> None:
    store = opener()
    assert isinstance(store, Protocol)
    assert store.labels() == []
    kept = [label(1), label(2, same=False, probability=None, source="feedback"),
            label(3, category="code", source="explored")]
    for x in kept:
        store.add_label(x)
    assert store.labels(tenant="acme") == kept
    assert store.labels(tenant="acme", category="code") == [kept[2]]
    assert store.labels(category="faq") == kept[:2]


def test_tenants_never_see_each_others_labels(opener: Callable[[], DocumentStore]) -> None:
    store = opener()
    store.add_label(label(1, tenant="acme"))
    store.add_label(label(2, tenant="globex"))
    assert [x.query for x in store.labels(tenant="acme")] == ["query 1"]
    assert [x.query for x in store.labels(tenant="globex")] == ["query 2"]
    assert store.labels(tenant="initech") == []
    assert store.delete_labels(tenant="acme") == 1
    assert [x.tenant for x in store.labels()] == ["globex"]
    assert store.delete_labels() == 1
    assert store.labels() == []


def test_labels_are_bounded_per_tenant_oldest_first(opener: Callable[[], DocumentStore]) -> None:
    store = opener()
    for i in range(7):
        store.add_label(label(i), limit=3)
    store.add_label(label(100, tenant="other"), limit=3)
    assert [x.entry_id for x in store.labels(tenant="acme")] == [4, 5, 6]
    assert len(store.labels(tenant="other")) == 1


def test_labels_survive_entry_deletion_and_reopening(
        opener: Callable[[], DocumentStore], request: pytest.FixtureRequest) -> None:
    store = opener()
    store.add_label(label(1))
    store.delete([1])
    assert len(store.labels()) == 1
    if request.node.callspec.params["opener"] == "memory":
        return  # nothing outlives a memory store
    store.close()
    assert opener().labels() == [label(1)]


def test_label_rejects_unknown_source_and_bad_json() -> None:
    with pytest.raises(ValueError, match="source"):
        label(1, source="guess")
    with pytest.raises(ValueError, match="not a stored label"):
        Label.from_json('{"tenant": "a"}')


class _Embed:
    """Unit vectors chosen per text (an in-memory embedder for the agreement rule)."""

    def __init__(self, cosine: float) -> None:
        self.cosine = cosine

    def __call__(self, texts: list[str]) -> np.ndarray:
        c = self.cosine
        return np.array([[1.0, 0.0], [c, np.sqrt(1 - c * c)]], dtype=np.float32)


def test_answer_agreement_rule() -> None:
    assert answers_agree("Paris.", "  paris ", None) is True
    assert answers_agree("Paris", "Lyon", None) is None  # no embedder: cannot tell
    assert answers_agree("Paris", "", _Embed(0.99)) is None
    assert answers_agree("The capital is Paris", "Paris is the capital",
                         _Embed(AGREE_COSINE + 0.01))
    assert answers_agree("a", "b", _Embed(0.3)) is False
    assert answers_agree("a", "b", _Embed(0.8)) is None  # between the bounds: no label


def test_labels_export_writes_the_pair_format(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/cache.db"
    store = open_store(url)
    store.add_label(label(1))
    store.add_label(label(2, tenant="globex", same=False))
    store.close()
    out = tmp_path / "pairs.jsonl"
    assert main(["labels", "export", "--store", url, "--out", str(out),
                 "--tenant", "globex"]) == 0
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert rows == [{"query": "query 2", "candidate": "candidate 2", "same": False,
                     "category": "faq", "source": "traffic-agreement"}]
    from prismcache.evaluation.records import read_pairs
    assert read_pairs(out)[0].same is False  # what `tune` reads
    assert main(["labels", "delete", "--store", url]) == 0
    assert "deleted 2 labels" in capsys.readouterr().out
