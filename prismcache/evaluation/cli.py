"""The ``prismcache data | eval | replay | calibrate`` subcommands (registered by
:mod:`prismcache.cli`). Each prints a short summary and writes JSON (and PNG) results."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from prismcache.config import CacheConfig, load_config
from prismcache.embedders import open_embedder
from prismcache.evaluation.records import read_pairs, read_trace, write_jsonl
from prismcache.evaluation.vectors import EmbeddingTable, measure_latency

__all__ = ["register_calibrate", "register_data", "register_eval", "register_replay"]


def _mapping(values: list[str] | None, cast: type = float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected CATEGORY=VALUE, got {item!r}")
        out[name] = cast(value)
    return out


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="cache config YAML (default: the built-in defaults)")
    parser.add_argument("--embedder", help="embedder spec (default: the config's)")
    parser.add_argument("--vector-cache", metavar="DIR",
                        help="keep embeddings in DIR between runs (e.g. bench/out/emb)")
    parser.add_argument("--json", required=True, metavar="OUT.json", help="results file")


def _setup(args: argparse.Namespace) -> tuple[CacheConfig, EmbeddingTable]:
    config = load_config(args.config)
    embedder = open_embedder(args.embedder or config.embedder)
    return config, EmbeddingTable(embedder, args.vector_cache)


def _write(path: str, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


# -- data ---------------------------------------------------------------------------------


def register_data(subparsers: Any) -> None:
    """``prismcache data pairs|trace``: convert ``../shared/data`` to the exchange formats."""
    parser = subparsers.add_parser("data", help="build labelled pairs or a trace from datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="pairs|trace|conversations",
                                required=True)
    pairs = sub.add_parser("pairs", help="labelled pairs (STS-B, Banking77, CLINC150, GSM8K)")
    trace = sub.add_parser("trace", help="a multi-category trace with Zipf repeats")
    talks = sub.add_parser("conversations", help="multi-turn pairs (and trace) by kind "
                           "(prismcache.evaluation.conversations)")
    talks.add_argument("--data", default="../shared/data", help="dataset root")
    talks.add_argument("--split", default="dev", choices=("dev", "test"))
    talks.add_argument("--seed", type=int, default=0)
    talks.add_argument("--per-intent", type=int, default=2, help="source conversations per intent")
    talks.add_argument("--out", required=True, metavar="PAIRS.jsonl")
    talks.add_argument("--trace", metavar="TRACE.jsonl", help="also write the multi-turn trace")
    for p, split in ((pairs, "train"), (trace, "test")):
        p.add_argument("--data", default="../shared/data", help="dataset root")
        p.add_argument("--split", default=split, choices=("train", "test"))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", required=True, metavar="OUT.jsonl")
    pairs.add_argument("--sources", default="stsb,banking77,clinc150,gsm8k")
    pairs.add_argument("--per-intent", type=int, default=30, help="queries sampled per intent")
    trace.add_argument("--requests", type=int, default=20_000)
    trace.add_argument("--rate", type=float, default=10.0, help="requests per second")
    trace.add_argument("--zipf", action="append", metavar="CAT=S", help="Zipf exponent")
    trace.add_argument("--mix", action="append", metavar="CAT=W", help="traffic share")
    parser.set_defaults(func=_data)


def _data(args: argparse.Namespace) -> int:
    from prismcache.evaluation import datasets, traces
    root = Path(args.data)
    if args.data_command == "conversations":
        from prismcache.evaluation.conversations import conversation_pairs_and_trace
        records, lines = conversation_pairs_and_trace(root, split=args.split, seed=args.seed,
                                                      per_intent=args.per_intent)
        if args.trace:
            print(f"wrote {write_jsonl(args.trace, lines)} lines to {args.trace}")
    elif args.data_command == "pairs":
        records: list[Any] = datasets.build_pairs(
            root, split=args.split, seed=args.seed, sources=args.sources.split(","),
            per_intent=args.per_intent)
    else:
        records = traces.build_trace(root, requests=args.requests, split=args.split,
                                     seed=args.seed, rate=args.rate,
                                     zipf=_mapping(args.zipf), mix=_mapping(args.mix))
    print(f"wrote {write_jsonl(args.out, records)} lines to {args.out}")
    return 0


# -- eval ---------------------------------------------------------------------------------


def register_eval(subparsers: Any) -> None:
    """``prismcache eval PAIRS.jsonl``: precision/recall of hit decisions on labelled pairs."""
    parser = subparsers.add_parser("eval", help="precision/recall of hit decisions on pairs")
    parser.add_argument("pairs", metavar="PAIRS.jsonl")
    _common(parser)
    parser.add_argument("--plot", metavar="OUT.png", help="precision-recall plot")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from prismcache.evaluation.evaluate import evaluate
    config, table = _setup(args)
    result = evaluate(read_pairs(args.pairs), config, table,
                      target_precision=args.target_precision)
    _write(args.json, result)
    print("precision / recall at the configured policies: the decision (guards + verifier), "
          "without the verifier, and cosine alone")
    print(f"{'category':<20}{'pairs':>7}{'AUC':>7}{'thr':>7}{'decision':>15}"
          f"{'no verifier':>15}{'cosine':>15}{'t@target':>10}")
    for name, g in {"overall": result["overall"], **result["categories"]}.items():
        at = g["at_configured"]
        target = g["at_target"]["guarded"]
        print(f"{name:<20}{g['pairs']:>7}{_f(g['roc_auc']):>7}"
              f"{_f(g.get('configured_threshold')):>7}"
              + "".join(f"{_f(at[k]['precision']) + ' / ' + _f(at[k]['recall']):>15}"
                        for k in ("decision", "guarded", "unguarded"))
              + f"{_f(target and target['threshold']):>10}")
    kinds = result["overall"]["kinds"]
    if set(kinds) != {"unlabelled"}:
        print(f"\nserved per kind\n{'kind':<28}{'pairs':>7}{'same':>7}{'served':>9}")
        for kind, row in kinds.items():
            print(f"{kind:<28}{row['pairs']:>7}{row['same']:>7}{row['served_rate']:>9.1%}")
    if args.plot:
        from prismcache.evaluation.plots import plot_precision_recall
        print(f"plot: {plot_precision_recall(result, args.plot)}")
    return 0


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# -- replay -------------------------------------------------------------------------------


def register_replay(subparsers: Any) -> None:
    """``prismcache replay TRACE.jsonl``: hit rate, false hits and savings of a trace."""
    parser = subparsers.add_parser("replay", help="replay a trace through a fresh cache")
    parser.add_argument("trace", metavar="TRACE.jsonl")
    _common(parser)
    parser.add_argument("--plot", metavar="OUT.png", help="hit/false-hit rates per category")
    parser.add_argument("--break-even-plot", metavar="OUT.png")
    parser.add_argument("--use-trace-categories", action="store_true",
                        help="pass each line's category to the cache (else classify)")
    parser.add_argument("--threshold", type=float, help="one threshold for every category")
    parser.add_argument("--latency-samples", type=int, default=200,
                        help="single-query embedder calls timed to charge the miss overhead")
    parser.add_argument("--upstream-latency", action="append", metavar="CAT=SECONDS")
    parser.add_argument("--price", action="append", metavar="CAT=USD",
                        help="price of one upstream call (CAT may be 'default')")
    parser.add_argument("--online", action="store_true",
                        help="learn verifier cut-offs from grey-zone labels while replaying")
    parser.add_argument("--target-precision", type=float, default=0.99,
                        help="with --online: the precision bound to keep (default 0.99)")
    parser.add_argument("--explore-rate", type=float,
                        help="with --online: share of grey-zone hits explored (default: config)")
    parser.add_argument("--cutoff-plot", metavar="OUT.png",
                        help="with --online: learned cut-offs over the trace")
    parser.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from prismcache.evaluation.metrics import percentile
    from prismcache.evaluation.replay import Economics, Online, replay
    config, table = _setup(args)
    online = (Online(target_precision=args.target_precision, explore_rate=args.explore_rate)
              if args.online else None)
    trace = read_trace(args.trace)
    texts = sorted({line.query for line in trace if isinstance(line.query, str)})
    latency = (measure_latency(table.embedder, texts, samples=args.latency_samples)
               if args.latency_samples > 0 else None)
    result = replay(trace, config, table, use_trace_categories=args.use_trace_categories,
                    embed_latency=latency, threshold=args.threshold,
                    economics=Economics(latency=_mapping(args.upstream_latency),
                                        price=_mapping(args.price)), online=online)
    if online is None and any(p.verifier != "none" for p in config.categories.values()):
        # The verifier's effect, on the same trace: the same config with every verifier off.
        plain = dataclasses.replace(config, categories={
            n: dataclasses.replace(p, verifier="none") for n, p in config.categories.items()})
        without = replay(trace, plain, table, use_trace_categories=args.use_trace_categories,
                         threshold=args.threshold)
        result["without_verifier"] = {
            name: {k: g[k] for k in ("requests", "hit_rate", "false_hit_rate", "precision")}
            for name, g in {"overall": without["overall"], **without["categories"]}.items()}
    result["embedder"] = {"id": table.embedder.id, "samples": 0 if latency is None
                          else len(latency)}
    if latency is not None:
        result["embedder"].update({f"single_query_ms_{q}": percentile(latency, n) * 1000
                                   for q, n in (("p50", 50), ("p99", 99))})
    _write(args.json, result)
    print(f"replayed {result['requests']} requests in {result['seconds']:.1f} s")
    print(f"{'category':<20}{'reqs':>7}{'hit':>7}{'false':>7}{'oracle':>8}{'prec':>7}"
          f"{'miss p50 ms':>12}{'break-even':>11}")
    for name, g in {"overall": result["overall"], **result["categories"]}.items():
        print(f"{name:<20}{g['requests']:>7}{g['hit_rate']:>7.3f}{g['false_hit_rate']:>7.3f}"
              f"{g['oracle_hit_rate']:>8.3f}{_f(g['precision']):>7}"
              f"{_f(g['miss_overhead_ms']['p50']):>12}{_f(g['break_even_hit_rate']):>11}")
    if "without_verifier" in result:
        print("the verifier's effect (the same trace, verifier off):")
        print(f"{'category':<20}{'hit':>7}{'false':>7}{'hit, off':>10}{'false, off':>11}")
        for name, g in {"overall": result["overall"], **result["categories"]}.items():
            off = result["without_verifier"].get(name)
            if off is not None:
                print(f"{name:<20}{g['hit_rate']:>7.3f}{g['false_hit_rate']:>7.3f}"
                      f"{off['hit_rate']:>10.3f}{off['false_hit_rate']:>11.3f}")
    if "online" in result:
        o, learned = result["overall"], result["online"]
        print(f"online (target precision {learned['target_precision']:g}): explored "
              f"{o['explored']} ({o['explored_rate']:.2%}), labels {learned['labels']}")
        for row in learned["calibration"]["categories"]:
            if not row["labels"]:
                continue
            print(f"  cut-off {row['category']}: {row['configured_cutoff']:g} -> "
                  f"{row['cutoff']:g} ({row['labels']} labels; {row['why']}); entries "
                  f"{row['entries_closed']} closed, {row['entries_looser']} looser")
    from prismcache.evaluation import plots
    if args.cutoff_plot and "online" in result:
        print(f"plot: {plots.plot_cutoffs(result, args.cutoff_plot)}")
    if args.plot:
        print(f"plot: {plots.plot_replay(result, args.plot)}")
    if args.break_even_plot:
        print(f"plot: {plots.plot_break_even(result, args.break_even_plot)}")
    return 0


# -- calibrate ----------------------------------------------------------------------------


def register_calibrate(subparsers: Any) -> None:
    """``prismcache calibrate PAIRS.jsonl``: per-category thresholds for a target precision."""
    parser = subparsers.add_parser("calibrate", help="fit per-category thresholds to pairs")
    parser.add_argument("pairs", metavar="PAIRS.jsonl")
    parser.add_argument("--config", help="base config YAML; its other settings are kept")
    parser.add_argument("--embedder", help="embedder spec (default: the config's)")
    parser.add_argument("--vector-cache", metavar="DIR")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--min-pairs", type=int, default=100)
    parser.add_argument("--min-positives", type=int, default=30)
    parser.add_argument("--out", required=True, metavar="policy.yaml")
    parser.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from prismcache.evaluation.calibrate import calibrate, write_policy
    config = load_config(args.config)
    table = EmbeddingTable(open_embedder(args.embedder or config.embedder), args.vector_cache)
    results = calibrate(read_pairs(args.pairs), config, table,
                        target_precision=args.target_precision, min_pairs=args.min_pairs,
                        min_positives=args.min_positives)
    base = yaml.safe_load(Path(args.config).read_text("utf-8")) if args.config else None
    write_policy(args.out, results, base=base, target_precision=args.target_precision,
                 source=Path(args.pairs).name)
    for result in results:
        print(("  " if result.flag is None else "! ") + f"{result.threshold:.4f}  "
              + result.comment())
    load_config(args.out)  # the file must load as the cache's config
    flagged = sum(r.flag is not None for r in results)
    print(f"wrote {args.out} ({flagged} categories flagged)", file=sys.stderr if flagged else
          sys.stdout)
    return 0
