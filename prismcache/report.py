"""``prismcache report``: the per-category economics table.

``--url http://proxy:8080/admin/economics`` reads a running proxy's live table (the admin token
from ``--token-env``, default ``PRISM_ADMIN_TOKEN``). Without ``--url`` it shows what the config
assumes before anything is measured: each category's upstream latency and price, whether it
auto-disables, and its load-adaptive bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from prismcache.config import format_duration, load_config

__all__ = ["format_table", "register"]


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser("report", help="per-category economics (live or configured)")
    parser.add_argument("--config", help="cache config YAML (default: the built-in defaults)")
    parser.add_argument("--url", help="a proxy's /admin/economics URL")
    parser.add_argument("--token-env", default="PRISM_ADMIN_TOKEN",
                        help="environment variable holding the admin token")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    if args.url:
        import httpx
        token = os.environ.get(args.token_env)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            reply = httpx.get(args.url, headers=headers, timeout=10.0)
        except httpx.HTTPError as exc:
            print(f"prismcache report: cannot reach {args.url}: {type(exc).__name__}",
                  file=sys.stderr)
            return 1
        if reply.status_code != 200:
            print(f"prismcache report: {args.url} answered {reply.status_code}: "
                  f"{reply.text[:200]}", file=sys.stderr)
            return 1
        body = reply.json()
        if args.json:
            print(json.dumps(body, indent=1))
            return 0
        print(f"window {body.get('window_s', 0):g} s, min requests {body.get('min_requests')}")
        print(format_table(body["categories"]))
        for model, level in sorted((body.get("load") or {}).items()):
            print(f"load level {model}: {level:.2f}")
        for row in (body.get("calibration") or {}).get("categories", []):
            bound = "-" if row["bound"] is None else f"{row['bound']:.4f}"
            print(f"learned cut-off {row['category']}: {row['cutoff']:g} (configured "
                  f"{row['configured_cutoff']:g}, target {row['target_precision']:g}, "
                  f"{row['labels']} labels, bound {bound}: {row['why']}; entries: "
                  f"{row.get('entries_closed', 0)} closed, {row.get('entries_looser', 0)} looser)")
        return 0
    return _configured(args)


def _configured(args: argparse.Namespace) -> int:
    from prismcache.adaptive import AdaptiveSettings
    from prismcache.economics import EconomicsSettings
    config = load_config(args.config)
    economics = EconomicsSettings.from_config(config)
    adaptive = AdaptiveSettings.from_config(config)
    rows = []
    for name, p in sorted(config.categories.items()):
        bounds = adaptive.bounds(name) if adaptive else None
        rows.append({"category": name, "threshold": p.threshold, "ttl": format_duration(p.ttl),
                     "upstream_latency_s": p.upstream_latency,
                     "price_per_1k_tokens": p.price_per_1k_tokens, "eviction": p.eviction,
                     "auto_disable": economics.auto_disables(name),
                     "max_threshold_drop": bounds.max_threshold_drop if bounds else 0.0,
                     "max_ttl_factor": bounds.max_ttl_factor if bounds else 1.0})
    if args.json:
        print(json.dumps({"window_s": economics.window, "categories": rows}, indent=1))
        return 0
    print(f"configured (no measurements): window {economics.window:g} s, min requests "
          f"{economics.min_requests}, shadow 1 in {economics.shadow_sample}, adaptive "
          f"{'on' if adaptive else 'off'}")
    print(f"{'category':<14}{'thr':>6}{'ttl':>6}{'U s':>6}{'$/1k':>8}{'evict':>6}"
          f"{'auto-off':>9}{'max drop':>9}{'ttl x':>7}")
    for r in rows:
        print(f"{r['category']:<14}{r['threshold']:>6.2f}{r['ttl']:>6}"
              f"{r['upstream_latency_s']:>6.1f}{r['price_per_1k_tokens']:>8.4f}"
              f"{r['eviction']:>6}{'yes' if r['auto_disable'] else 'no':>9}"
              f"{r['max_threshold_drop']:>9.3f}{r['max_ttl_factor']:>7.1f}")
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    """The economics table as aligned text (rows as in :meth:`EconomicsTracker.as_json`)."""
    head = (f"{'category':<16}{'reqs':>7}{'hit':>7}{'b-even':>8}{'O ms':>8}{'H ms':>8}"
            f"{'U s':>7}{'net s/req':>10}{'net s/h':>9}{'USD/h':>9}  state")
    lines = [head]
    for r in rows:
        state = ("disabled" if r["disabled"] else "flagged" if r["flagged"] else "ok")
        if r["shadow_lookups"]:
            state += f" (shadow {r['shadow_lookups']}: {_fmt(r['shadow_hit_rate'])})"
        lines.append(
            f"{r['category']:<16}{r['requests']:>7}{r['hit_rate']:>7.3f}"
            f"{_fmt(r['break_even_hit_rate']):>8}{r['miss_overhead_s'] * 1000:>8.2f}"
            f"{r['hit_s'] * 1000:>8.2f}{r['upstream_s']:>7.2f}{r['net_s_per_request']:>10.3f}"
            f"{r['net_s_per_hour']:>9.0f}{r['net_usd_per_hour']:>9.3f}  {state}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
