"""Build prismcache/data/category_examples.jsonl, the built-in classifier's training examples.

Run from the project root with the shared data beside it:

    python tools/make_category_examples.py ../shared/data

The output is committed; nothing reads the shared data at run time. Each source keeps its
licence (see prismcache/data/NOTICE).
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

PER_CATEGORY = 60
MAX_CHARS = 400
VOLATILE_INTENTS = ("weather", "exchange_rate", "traffic", "flight_status", "time", "date")
VOLATILE_EXTRA = [
    "what is the stock price of apple right now", "how is the nasdaq doing today",
    "latest news about the election", "what's the bitcoin price", "who won the game last night",
    "current score of the lakers game", "top headlines this morning", "is it going to rain tomorrow",
    "how much is a share of tesla", "what's trending on twitter today", "gas prices near me today",
    "live updates on the hurricane",
]


def main(data: Path, out: Path) -> None:
    rng = random.Random(7)
    rows: list[dict[str, str]] = []

    def add(category: str, texts: list[str], n: int = PER_CATEGORY) -> None:
        texts = [t.strip()[:MAX_CHARS] for t in texts if t.strip()]
        for text in rng.sample(texts, min(n, len(texts))):
            rows.append({"text": text, "category": category})

    arena = [json.loads(line) for line in (data / "arena_hard/arena-hard-v2.0_question.jsonl").open()]
    clinc = json.loads((data / "clinc150/data_full.json").read_text())
    domains = json.loads((data / "clinc150/domains.json").read_text())
    add("code", [a["prompt"] for a in arena if a["subcategory"] == "coding"])
    gsm = [json.loads(line)["question"] for line in (data / "gsm8k/test.jsonl").open()]
    add("math", gsm, 40)
    add("math", [a["prompt"] for a in arena if a["subcategory"] == "math"], 20)
    add("creative", [a["prompt"] for a in arena if a["subcategory"] == "creative_writing"])
    nq = [json.loads(line)["question"] for line in (data / "nq_open/NQ-open.dev.jsonl").open()]
    add("factual", nq)
    small_talk = set(domains["small_talk"])
    add("conversation", [t for t, intent in clinc["train"] if intent in small_talk])
    with (data / "banking77/train.csv").open(newline="") as f:
        add("support", [r["text"] for r in csv.DictReader(f)])
    add("volatile", [t for t, intent in clinc["train"] if intent in VOLATILE_INTENTS], 48)
    rows.extend({"text": t, "category": "volatile"} for t in VOLATILE_EXTRA)

    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} examples to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"),
         Path("prismcache/data/category_examples.jsonl"))
