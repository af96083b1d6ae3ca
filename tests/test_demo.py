"""The demo says what it did before each table it prints (run on the hash embedder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prismcache.demo import run_demo

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.mark.skipif(not (DATA / "banking77" / "test.csv").exists(),
                    reason="the shared datasets are not at ../shared/data")
def test_each_table_is_introduced_by_a_line_saying_what_it_shows(tmp_path, capsys) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump({"embedder": "hash:64", "classifier": {"examples": None}}))
    run_demo(DATA, store="memory://", config=str(config), intents=2, paraphrases=1)
    lines = capsys.readouterr().out.splitlines()
    for header in ("source", "category"):
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [header])
        assert lines[at - 1].endswith(":") and len(lines[at - 1]) > 40, lines[at - 1]
    assert any(line.startswith("stored one answer for each of") for line in lines)
