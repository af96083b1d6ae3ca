"""PNG plots of evaluation results. matplotlib is imported only when a plot is drawn
(``pip install 'prismcache[bench]'``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_break_even", "plot_cutoffs", "plot_policies", "plot_precision_recall",
           "plot_replay"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plots need matplotlib: pip install 'prismcache[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig: Any, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    _pyplot().close(fig)
    return target


def plot_precision_recall(result: Mapping[str, Any], path: str | Path) -> Path:
    """Precision-recall curves (threshold sweep, with guards) overall and per category."""
    plt = _pyplot()
    groups = {"overall": result["overall"], **result["categories"]}
    fig, ax = plt.subplots(figsize=(9, 6))
    colours = plt.get_cmap("tab20").colors
    for i, (name, group) in enumerate(groups.items()):
        rows = [r for r in group["sweep"] if r["precision"] is not None
                and r["recall"] is not None]
        if not rows or group["positives"] == 0:
            continue
        ax.plot([r["recall"] for r in rows], [r["precision"] for r in rows],
                lw=2.5 if name == "overall" else 1.2,
                color="black" if name == "overall" else colours[i % len(colours)],
                label=f"{name} (AUC {group['roc_auc']:.2f})" if group["roc_auc"] else name)
    ax.set_xlabel("recall (same pairs served)")
    ax.set_ylabel("precision (served pairs that are same)")
    ax.set_title(f"Precision-recall over the threshold sweep, guards on ({result['embedder']})")
    ax.axhline(result["target_precision"], ls=":", color="grey")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_replay(result: Mapping[str, Any], path: str | Path) -> Path:
    """Hit rate, false-hit rate and oracle hit rate per category of a replay."""
    plt = _pyplot()
    names = list(result["categories"])
    cats = result["categories"]
    fig, ax = plt.subplots(figsize=(10, 5))
    x = range(len(names))
    for offset, key, label in ((-0.27, "oracle_hit_rate", "oracle"), (0.0, "hit_rate", "hit"),
                               (0.27, "false_hit_rate", "false hit")):
        ax.bar([i + offset for i in x], [cats[n][key] for n in names], width=0.27, label=label)
    ax.set_xticks(list(x), names, rotation=45, ha="right")
    ax.set_ylabel("share of requests")
    ax.set_title(f"Replay of {result['requests']} requests")
    ax.legend()
    return _save(fig, path)


def plot_break_even(result: Mapping[str, Any], path: str | Path) -> Path:
    """Measured hit rate beside the break-even hit rate, per category (log scale)."""
    plt = _pyplot()
    cats = {n: c for n, c in result["categories"].items() if c["break_even_hit_rate"]}
    names = list(cats)
    fig, ax = plt.subplots(figsize=(10, 5))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [max(cats[n]["hit_rate"], 1e-5) for n in names], width=0.4,
           label="hit rate")
    ax.bar([i + 0.2 for i in x], [cats[n]["break_even_hit_rate"] for n in names], width=0.4,
           label="break-even hit rate")
    ax.set_yscale("log")
    ax.set_xticks(list(x), names, rotation=45, ha="right")
    ax.set_title("Hit rate vs break-even hit rate (miss overhead / net saving per hit)")
    ax.legend()
    return _save(fig, path)


def plot_policies(points: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Hit rate against false-hit rate, one marker or line per policy. Each point has
    ``policy``, ``label``, ``hit_rate`` and ``false_hit_rate``; points sharing a ``policy``
    are joined in order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    by_policy: dict[str, list[Mapping[str, Any]]] = {}
    for point in points:
        by_policy.setdefault(point["policy"], []).append(point)
    for policy, group in by_policy.items():
        xs = [p["false_hit_rate"] for p in group]
        ys = [p["hit_rate"] for p in group]
        ax.plot(xs, ys, marker="o", label=policy, ls="-" if len(group) > 1 else "none")
        for p, xv, yv in zip(group, xs, ys, strict=True):
            ax.annotate(p["label"], (xv, yv), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("false-hit rate (wrong hits / requests)")
    ax.set_ylabel("hit rate (hits / requests)")
    ax.set_title("Hit rate vs false-hit rate per policy (same trace)")
    ax.legend()
    return _save(fig, path)


def plot_cutoffs(result: Mapping[str, Any], path: str | Path) -> Path:
    """``replay --online``: each category's learned verifier cut-off against the request
    number (a step plot; the first point is the configured cut-off), and on a second axis
    the number of entries with a cut-off of their own (per-entry calibration)."""
    plt = _pyplot()
    online = result["online"]
    fig, ax = plt.subplots(figsize=(9, 5))
    end = result["requests"]
    for name, steps in sorted(online["cutoffs"].items()):
        xs = [s[0] for s in steps] + [end]
        ys = [s[1] for s in steps] + [steps[-1][1]]
        ax.step(xs, ys, where="post", label=name)
    ax.set_xlabel("request")
    ax.set_ylabel("verifier cut-off in force")
    ax.set_ylim(0, 1.02)
    o = result["overall"]
    ax.set_title(f"replay --online, target precision {online['target_precision']:g}: hit "
                 f"{o['hit_rate']:.1%}, false {o['false_hit_rate']:.2%}, explored "
                 f"{o['explored_rate']:.1%}")
    if online["cutoffs"]:
        ax.legend(fontsize=8, loc="lower left", ncol=2)
    entries = online.get("entries")
    if entries:
        twin = ax.twinx()
        twin.step([s[0] for s in entries] + [end], [s[1] for s in entries] + [entries[-1][1]],
                  where="post", color="black", linestyle=":", label="entries with own cut-off")
        twin.set_ylabel("entries with a cut-off of their own (dotted)")
    return _save(fig, path)
