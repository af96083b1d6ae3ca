"""Small operator subcommands: ``prismcache stats`` and ``prismcache config``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prismcache.config import format_duration, load_config
from prismcache.stores import open_store, redact_url

__all__ = ["register_config", "register_stats", "store_location"]


def store_location(url: str) -> str:
    """Where a store URL keeps its data, for people: a SQLite file as an absolute path
    (``sqlite:///prismcache.db`` is relative to the working directory), any other URL
    redacted (no password).

    >>> store_location("memory://")
    'memory:// (in this process only)'
    """
    if url.startswith("sqlite:///"):
        path, mark, query = url.removeprefix("sqlite:///").partition("?")
        return f"sqlite:///{Path(path).resolve()}{mark}{query}"
    if url.startswith("memory://"):
        return "memory:// (in this process only)"
    return redact_url(url)


def register_stats(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``prismcache stats [--config F] [--store URL] [--json]``."""
    parser = sub.add_parser("stats", help="entries and bytes per category in a cache's store")
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("--store", help="store URL (overrides the config)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_stats)


def _stats(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    url = args.store or config.store
    # The store alone answers this: no embedder, no index rebuild.
    store = open_store(url)
    try:
        usage = store.usage()
    finally:
        store.close()
    rows = {name: {"entries": u.entries, "bytes": u.bytes} for name, u in sorted(usage.items())}
    if args.json:
        print(json.dumps({"store": store_location(url), "categories": rows}, indent=2))
        return 0
    print(f"store: {store_location(url)}")
    print(f"{'category':<14}{'entries':>10}{'bytes':>14}")
    for name, row in rows.items():
        print(f"{name:<14}{row['entries']:>10,}{row['bytes']:>14,}")
    total_entries = sum(r["entries"] for r in rows.values())
    total_bytes = sum(r["bytes"] for r in rows.values())
    print(f"{'total':<14}{total_entries:>10,}{total_bytes:>14,}")
    return 0


def register_config(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``prismcache config [--config F]``: validate and print the merged config."""
    parser = sub.add_parser("config", help="validate a config and print it merged with defaults")
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.set_defaults(func=_config)


def _config(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # a ConfigError lists every unknown key (cli.main)
    out: dict[str, Any] = {
        "store": redact_url(config.store), "embedder": config.embedder,
        "capacity": {"entries": config.capacity_entries, "bytes": config.capacity_bytes},
        "default_category": config.default_category,
        "categories": {
            name: {**asdict(p), "ttl": format_duration(p.ttl), "guards": list(p.guards)}
            for name, p in config.categories.items()
        },
        "rules": [{"category": r.category, "keywords": list(r.keywords), "regex": r.regex}
                  for r in config.rules],
        "classifier": asdict(config.classifier), "limits": asdict(config.limits),
        "neighbours": config.neighbours, "index": dict(config.index),
        "snapshot": config.snapshot,
    }
    print(json.dumps(out, indent=2))
    return 0


