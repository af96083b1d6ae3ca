"""The dataset converters, on small slices of ../shared/data copied into a temporary tree."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from prismcache.cli import main
from prismcache.evaluation import datasets

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLINC_INTENTS = ("translate", "lost_luggage", "carry_on", "weather", "flip_coin", "timer",
                 "greeting", "goodbye", "tell_joke")


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the shared datasets are not beside the clone ({DATA} is missing)")
    root = tmp_path_factory.mktemp("data")
    full = json.loads((DATA / "clinc150" / "data_full.json").read_text("utf-8"))
    sliced = {split: [row for row in rows if row[1] in CLINC_INTENTS][:300]
              for split, rows in full.items() if not split.startswith("oos")}
    sliced.update({split: rows[:20] for split, rows in full.items() if split.startswith("oos")})
    (root / "clinc150").mkdir()
    (root / "clinc150" / "data_full.json").write_text(json.dumps(sliced))
    domains = json.loads((DATA / "clinc150" / "domains.json").read_text("utf-8"))
    (root / "clinc150" / "domains.json").write_text(json.dumps(
        {d: [i for i in intents if i in CLINC_INTENTS] for d, intents in domains.items()}))
    (root / "banking77").mkdir()
    for split in ("train", "test"):
        with open(DATA / "banking77" / f"{split}.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        keep = sorted({r["category"] for r in rows})[:5]
        with open(root / "banking77" / f"{split}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows(r for r in rows if r["category"] in keep)
    (root / "stsb").mkdir()
    for split in ("train", "test"):
        lines = (DATA / "stsb" / f"sts-{split}.csv").read_text("utf-8").splitlines()[:200]
        (root / "stsb" / f"sts-{split}.csv").write_text("\n".join(lines) + "\n")
    for folder, name, n in (("gsm8k", "test.jsonl", 60), ("nq_open", "NQ-open.dev.jsonl", 50)):
        (root / folder).mkdir()
        lines = (DATA / folder / name).read_text("utf-8").split("\n")[:n]
        (root / folder / name).write_text("\n".join(lines) + "\n")
    (root / "arena_hard").mkdir()
    arena = (DATA / "arena_hard" / "arena-hard-v2.0_question.jsonl").read_text("utf-8")
    kept = []
    for sub in ("coding", "creative_writing"):
        kept += [line for line in arena.split("\n")
                 if line.strip() and json.loads(line).get("subcategory") == sub][:20]
    (root / "arena_hard" / "arena-hard-v2.0_question.jsonl").write_text("\n".join(kept) + "\n")
    return root


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").split("\n") if line]


def test_pairs_are_valid_jsonl_with_documented_fields(sliced: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "pairs", "--data", str(sliced), "--out", str(out)]) == 0
    pairs = read(out)
    for pair in pairs:
        assert {"query", "candidate", "same", "category", "kind", "source"} == set(pair)
        assert isinstance(pair["same"], bool)
        assert pair["query"] and pair["candidate"]
    kinds = Counter((p["source"], p["kind"], p["same"]) for p in pairs)
    assert kinds[("clinc150", "same_intent_other_slot", False)] > 0  # translate, weather...
    assert kinds[("clinc150", "paraphrase", True)] > 0  # lost_luggage, greeting...
    assert kinds[("banking77", "neighbour_intent", False)] > 0
    assert kinds[("stsb", "sts_high", True)] > 0 and kinds[("stsb", "sts_low", False)] > 0
    assert kinds[("gsm8k", "number_changed", False)] > 0
    support = {p["category"] for p in pairs if p["source"] == "banking77"}
    assert support == {"support"}
    assert {p["category"] for p in pairs if p["source"] == "clinc150"} <= {
        "travel", "utility", "small_talk"}


def test_gsm8k_halves_do_not_overlap(sliced: Path) -> None:
    train, test = datasets.gsm8k(sliced, "train"), datasets.gsm8k(sliced, "test")
    assert train and test and not set(train) & set(test)


def test_trace_is_valid_jsonl_with_documented_fields(sliced: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    args = ["data", "trace", "--data", str(sliced), "--requests", "2000", "--out", str(out),
            "--zipf", "support=1.5"]
    assert main(args) == 0
    lines = read(out)
    assert len(lines) == 2000
    for line in lines:
        assert {"query", "answer_key", "category", "t"} == set(line)
    times = [line["t"] for line in lines]
    assert times == sorted(times)
    categories = Counter(line["category"] for line in lines)
    assert {"support", "factual", "math", "code", "creative", "general"} <= set(categories)
    # repeats are both verbatim and paraphrased; slot intents get one key per request
    by_key: dict[str, set[str]] = {}
    for line in lines:
        by_key.setdefault(line["answer_key"], set()).add(line["query"])
    assert any(len(q) > 1 for k, q in by_key.items() if k.startswith("b77:"))
    assert all(len(q) == 1 for k, q in by_key.items() if k.startswith("clinc:translate"))
    assert Counter(line["query"] for line in lines).most_common(1)[0][1] > 1
    assert any(line["answer_key"].startswith("oos:") for line in lines)
    # a fixed seed gives the same trace
    again = tmp_path / "again.jsonl"
    assert main(args[:-4] + ["--out", str(again), "--zipf", "support=1.5"]) == 0
    assert again.read_text() == out.read_text()
