"""The JSONL exchange formats of ``data/README.md``, read and written as dataclasses.

Labelled pairs::

    {"query": "how do i freeze my card", "candidate": "can you lock my card", "same": true,
     "category": "banking", "kind": "paraphrase", "source": "clinc150"}

Trace lines::

    {"query": "...", "answer_key": "freeze_account", "category": "banking", "tenant": "acme",
     "t": 12.5}

``kind`` and ``source`` are optional extras this package writes (they let the evaluation
report each failure type separately); ``query`` and ``candidate`` may be OpenAI-style
``messages`` lists, and a trace line may carry ``messages`` in place of ``query``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Pair", "TraceLine", "last_user_turn", "read_pairs", "read_trace", "write_jsonl"]

Text = str | list[dict[str, Any]]


def last_user_turn(value: Text) -> tuple[str, str]:
    """Split a query (a string or a ``messages`` list) into (last user turn, context), where
    context is a canonical JSON string of the messages before it ("" for a plain string).

    >>> last_user_turn("hi")
    ('hi', '')
    >>> last_user_turn([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])[0]
    'b'
    """
    if isinstance(value, str):
        return value, ""
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a string or a non-empty messages list, got {value!r:.80}")
    for i in range(len(value) - 1, -1, -1):
        message = value[i]
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str):
                raise ValueError("only string message contents are supported")
            return content, json.dumps(value[:i], sort_keys=True, ensure_ascii=False)
    raise ValueError("messages list has no user turn")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pair:
    """One labelled pair: should the answer stored for ``candidate`` be served to ``query``?"""

    query: Text
    candidate: Text
    same: bool
    category: str
    kind: str | None = None
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSONL object (optional fields only when set)."""
        out: dict[str, Any] = {"query": self.query, "candidate": self.candidate,
                               "same": self.same, "category": self.category}
        if self.kind is not None:
            out["kind"] = self.kind
        if self.source is not None:
            out["source"] = self.source
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceLine:
    """One request of a trace. ``query`` is a string or a ``messages`` list."""

    query: Text
    answer_key: str
    category: str | None = None
    tenant: str | None = None
    t: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSONL object (``messages`` in place of ``query`` for a list)."""
        out: dict[str, Any] = ({"query": self.query} if isinstance(self.query, str)
                               else {"messages": self.query})
        out["answer_key"] = self.answer_key
        for name in ("category", "tenant", "t"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if not isinstance(doc, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")  # noqa: TRY004
            yield number, doc


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a labelled-pairs JSONL file. Raises ``ValueError`` naming the line on a bad one."""
    pairs = []
    for number, doc in _lines(path):
        try:
            pair = Pair(query=doc["query"], candidate=doc["candidate"], same=doc["same"],
                        category=doc.get("category") or "general", kind=doc.get("kind"),
                        source=doc.get("source"))
            last_user_turn(pair.query), last_user_turn(pair.candidate)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: bad pair: {exc}") from None
        if not isinstance(pair.same, bool):
            raise ValueError(f"{path}:{number}: 'same' must be true or false")  # noqa: TRY004
        pairs.append(pair)
    return pairs


def read_trace(path: str | Path) -> list[TraceLine]:
    """Read a trace JSONL file. Raises ``ValueError`` naming the line on a bad one."""
    lines = []
    for number, doc in _lines(path):
        query = doc.get("query", doc.get("messages"))
        key = doc.get("answer_key")
        if query is None or not isinstance(key, str):
            raise ValueError(f"{path}:{number}: a trace line needs query (or messages) and "
                             "a string answer_key")
        t = doc.get("t")
        lines.append(TraceLine(query=query, answer_key=key, category=doc.get("category"),
                               tenant=doc.get("tenant"),
                               t=None if t is None else float(t)))
    return lines


def write_jsonl(path: str | Path, records: Iterable[Pair | TraceLine]) -> int:
    """Write records one JSON object a line; return how many. Creates parent directories."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(target, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def texts_of(values: Sequence[Text]) -> list[str]:
    """The last user turns of ``values`` (for embedding)."""
    return [last_user_turn(v)[0] for v in values]
