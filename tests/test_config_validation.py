"""One validated configuration tree: every unknown key reported with its path, one size and
one duration grammar, optional parts' sections checked when the config loads."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from prismcache import ConfigError
from prismcache.config import CategoryPolicy, load_config, parse_size, unknown_keys


def test_every_unknown_key_is_reported_with_its_path() -> None:
    bad = {"categories": {"code": {"treshold": 0.9}}, "economics": {"windw": "5m"},
           "adaptive": {"defaults": {"max_drop": 1}}, "limits": {"max_tokens": 3},
           "rules": [{"category": "code", "regexp": "x"}], "colour": "blue"}
    with pytest.raises(ConfigError) as raised:
        load_config(bad)
    for path in ("categories.code.treshold", "economics.windw", "adaptive.defaults.max_drop",
                 "limits.max_tokens", "rules[0].regexp", "colour"):
        assert path in str(raised.value)


@pytest.mark.parametrize("section", [{"economics": {"nope": 1}}, {"adaptive": {"nope": 1}},
                                     {"economics": {"admission": {"nope": 1}}},
                                     {"economics": {"categories": {"code": {"nope": 1}}}},
                                     {"adaptive": {"categories": {"code": {"nope": 1}}}}])
def test_optional_sections_reject_unknown_keys_when_the_config_loads(section) -> None:
    with pytest.raises(ConfigError, match="nope"):
        load_config(section)


def test_optional_sections_values_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match="shadow_sample"):
        load_config({"economics": {"shadow_sample": 0}})
    with pytest.raises(ConfigError, match="down_at"):
        load_config({"adaptive": {"down_at": 2.0}})


def test_server_keys_are_checked_too() -> None:
    assert unknown_keys({"server": {"upstream": "http://x/v1", "admin_token_env": "A",
                                    "metrics_token_env": "M",
                                    "tenants": [{"tenant": "a", "kee": "k"}], "nope": 1}}) == \
        ["server.tenants[0].kee", "server.nope"]


def test_every_category_policy_field_is_a_key() -> None:
    """Keys come from the dataclass: a field added to CategoryPolicy needs no second list."""
    for field in fields(CategoryPolicy):
        assert unknown_keys({"categories": {"code": {field.name: None}},
                             "defaults": {field.name: None}}) == []


@pytest.mark.parametrize("text,size", [("1GB", 10**9), ("1gb", 10**9), ("1MiB", 2**20),
                                       ("1mib", 2**20), ("64 KiB", 65536), (2048, 2048),
                                       ("1.5kb", 1500)])
def test_one_size_grammar_everywhere(text, size) -> None:
    from prismcache.server import ServerSettings

    assert parse_size(text, key="k") == size
    assert load_config({"capacity": {"bytes": text}}).capacity_bytes == size
    assert ServerSettings.from_config({"max_body_bytes": text}).max_body_bytes == size


@pytest.mark.parametrize("text", ["1 parsec", "-5", "0", "MB", True])
def test_bad_sizes_name_their_key(text) -> None:
    with pytest.raises(ConfigError, match="capacity.bytes"):
        load_config({"capacity": {"bytes": text}})


def test_prismcache_config_lists_every_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("economics:\n  windw: 5m\ncategories:\n  code:\n    treshold: 0.9\n")
    out = subprocess.run([sys.executable, "-m", "prismcache.cli", "config", "--config",
                          str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "economics.windw" in out.stderr and "categories.code.treshold" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_bad_config_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "prismcache.cli", "stats", "--config",
                          str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert out.returncode == 2 and "cannot read config" in out.stderr
    assert "Traceback" not in out.stderr
