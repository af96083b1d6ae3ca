"""Labels from the operator's own traffic: was a near candidate's answer right for a request?

A :class:`Label` records one judged pair: a request's query text, the stored entry that was
near it (its id and query text), the cosine and the verifier's probability the decision saw,
and whether the two deserve the same answer (``same``). Labels come from three sources:

``agreement``
    a request missed with a candidate in the grey zone (the verifier rejected it); the proxy
    forwarded it upstream anyway, and compared the fresh answer with the candidate's stored
    answer (:func:`answers_agree`). No extra upstream call.
``explored``
    a grey-zone candidate the verifier *accepted* was deliberately not served (a small share,
    ``explore_rate``); the request went upstream and its answer was compared the same way.
    An explored request is a miss: it serves nothing wrong, it costs one upstream call.
``feedback``
    a client said a served hit was wrong or right (``POST /admin/feedback``).

Stores keep labels per tenant, bounded (:data:`MAX_LABELS_PER_TENANT`, oldest dropped first);
:func:`write_pairs` writes them in the labelled-pair exchange format (``prismcache tune`` reads
it). The calibration that learns from labels is :mod:`prismcache.calibration`.

>>> label = Label(tenant="acme", category="faq", query="how do I reset it",
...               entry_id=7, candidate="how to reset it", similarity=0.91,
...               probability=0.62, same=True, source="agreement", t=0.0)
>>> Label.from_json(label.to_json()) == label
True
>>> answers_agree("Paris.", "paris", None)
True
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from prismcache.decision import MissReason
from prismcache.request import normalise
from prismcache.results import Hit, Miss

if TYPE_CHECKING:
    from prismcache.config import CategoryPolicy

__all__ = ["AGREE_COSINE", "DISAGREE_COSINE", "MAX_LABELS_PER_TENANT", "SOURCES", "Label",
           "Probe", "answers_agree", "probe_of", "write_pairs"]

#: most labels a store keeps per tenant; the oldest go first
MAX_LABELS_PER_TENANT = 10_000
SOURCES = ("agreement", "explored", "feedback")
#: two answers whose embeddings (bundled MiniLM) have at least this cosine agree. Measured on
#: ParaQA train (1,500 questions): 17% of true answer paraphrases reach it, 1.5% of each
#: answer's nearest *other* question's answer do (docs/learning.md): agreement must be sure
AGREE_COSINE = 0.95
#: below this cosine they disagree (9% of true paraphrases, 38% of nearest other answers); in
#: between no label is recorded. Calling a right answer wrong only makes calibration stricter
DISAGREE_COSINE = 0.60

Source = Literal["agreement", "explored", "feedback"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Label:
    """One judged pair from live traffic.

    Attributes:
        tenant: whose traffic it came from (labels never leave their tenant's key space).
        category: the request's category.
        query: the request's last user turn.
        entry_id: the stored entry that was near (or served).
        candidate: that entry's query text.
        similarity: the cosine the decision saw.
        probability: the verifier's probability, ``None`` when no verifier ran or it is
            unknown (feedback on a hit the proxy no longer remembers).
        same: whether the candidate's answer serves the query.
        source: ``"agreement"``, ``"explored"`` or ``"feedback"``.
        t: when it was recorded (seconds since the epoch, the cache's clock).
    """

    tenant: str
    category: str
    query: str
    entry_id: int
    candidate: str
    similarity: float
    probability: float | None
    same: bool
    source: Source
    t: float

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"label source must be one of {SOURCES}, got {self.source!r}")

    def to_json(self) -> str:
        """The label as one JSON object (what the stores keep)."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Label:
        """Parse :meth:`to_json`'s output. Raises ``ValueError`` on anything else."""
        try:
            doc = json.loads(text)
            return cls(tenant=str(doc["tenant"]), category=str(doc["category"]),
                       query=str(doc["query"]), entry_id=int(doc["entry_id"]),
                       candidate=str(doc["candidate"]), similarity=float(doc["similarity"]),
                       probability=(None if doc["probability"] is None
                                    else float(doc["probability"])),
                       same=bool(doc["same"]), source=doc["source"], t=float(doc["t"]))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a stored label: {exc}") from None

    def pair(self) -> dict[str, Any]:
        """The label in the labelled-pair exchange format (``../shared/data/README.md``)."""
        return {"query": self.query, "candidate": self.candidate, "same": self.same,
                "category": self.category, "source": f"traffic-{self.source}"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """A near candidate whose stored answer a fresh answer (or a client's verdict) will judge:
    the request's tenant, category and query, the entry, and what the decision saw."""

    tenant: str
    category: str
    query: str
    entry_id: int
    similarity: float
    probability: float
    source: Source

    def label(self, candidate: str, same: bool, *, t: float | None = None) -> Label:
        """The label this probe makes once judged: ``candidate`` is the entry's query text,
        ``same`` the verdict; stamped ``t`` (default: now)."""
        return Label(tenant=self.tenant, category=self.category, query=self.query,
                     entry_id=self.entry_id, candidate=candidate, similarity=self.similarity,
                     probability=self.probability, same=same, source=self.source,
                     t=time.time() if t is None else t)


def probe_of(result: Hit | Miss, policy: CategoryPolicy, *, tenant: str, query: str,
             explore: Callable[[], float]) -> Probe | None:
    """The probe a lookup ``result`` makes under its category's ``policy``, or ``None``:

    - a miss whose grey-zone candidate the verifier rejected (it goes upstream anyway):
      labelled by ``agreement``;
    - a semantic hit the verifier accepted in the grey zone (probability below 1), when
      ``explore()`` (a uniform draw, made only then) falls below ``policy.explore_rate``:
      ``explored``, forwarded instead of served.

    The caller decides whether the category is calibrated at all (and, for exploration,
    that the upstream is not overloaded)."""
    if result.category is None:
        return None
    if isinstance(result, Miss):
        if result.reason is not MissReason.VERIFIER or result.grey_entry is None:
            return None
        return Probe(tenant=tenant, category=result.category, query=query,
                     entry_id=result.grey_entry, similarity=result.grey_similarity or 0.0,
                     probability=result.grey_probability or 0.0, source="agreement")
    if (result.tier != "semantic" or result.probability is None or result.probability >= 1.0
            or policy.explore_rate <= 0.0 or explore() >= policy.explore_rate):
        return None
    return Probe(tenant=tenant, category=result.category, query=query, entry_id=result.entry_id,
                 similarity=result.similarity, probability=result.probability,
                 source="explored")


def answers_agree(fresh: str, stored: str,
                  embed: Callable[[Sequence[str]], np.ndarray] | None) -> bool | None:
    """Whether two answers to near requests say the same thing: ``True``, ``False``, or
    ``None`` when the rule cannot tell (then no label is recorded).

    Equal after :func:`~prismcache.request.normalise` (case, spaces, edge punctuation): agree.
    Else, with ``embed`` (unit vectors of texts, e.g. the cache's embedder): cosine of the two
    answers >= :data:`AGREE_COSINE` agree, < :data:`DISAGREE_COSINE` disagree, in between
    ``None``. Without ``embed``: ``None`` unless equal. An empty answer: ``None``.
    """
    a, b = normalise(fresh), normalise(stored)
    if not a or not b:
        return None
    if a == b:
        return True
    if embed is None:
        return None
    vectors = np.asarray(embed([fresh, stored]), dtype=np.float32)
    cosine = float(vectors[0] @ vectors[1])
    if cosine >= AGREE_COSINE:
        return True
    if cosine < DISAGREE_COSINE:
        return False
    return None


def write_pairs(labels: Iterable[Label], path: str | Path) -> int:
    """Write ``labels`` as labelled pairs (JSONL) to ``path``; return how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for label in labels:
            out.write(json.dumps(label.pair(), ensure_ascii=False) + "\n")
            count += 1
    return count


def register(subparsers: Any) -> None:
    """``prismcache labels export|delete``: the labels a cache's store keeps."""
    parser = subparsers.add_parser("labels", help="export or delete labels learned from traffic")
    sub = parser.add_subparsers(dest="labels_command", metavar="export|delete", required=True)
    export = sub.add_parser("export", help="write labels as labelled pairs (JSONL)")
    export.add_argument("--out", required=True, metavar="PAIRS.jsonl")
    export.add_argument("--category", help="only this category")
    delete = sub.add_parser("delete", help="delete labels (learned cut-offs fall back)")
    for p in (export, delete):
        p.add_argument("--config", help="YAML config (default: built-in defaults)")
        p.add_argument("--store", help="store URL (overrides the config)")
        p.add_argument("--tenant", help="only this tenant's labels")
    parser.set_defaults(func=_labels)


def _labels(args: Any) -> int:
    from prismcache.config import load_config
    from prismcache.stores import open_store
    store = open_store(args.store or load_config(args.config).store)
    try:
        if args.labels_command == "export":
            count = write_pairs(store.labels(tenant=args.tenant, category=args.category),
                                args.out)
            print(f"wrote {count} labelled pairs to {args.out}")
        else:
            print(f"deleted {store.delete_labels(tenant=args.tenant)} labels")
    finally:
        store.close()
    return 0
