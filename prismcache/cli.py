"""The ``prismcache`` command. One thin module: each subcommand lives beside the code it
drives and registers itself through :data:`SUBCOMMANDS` (``"module:function"`` strings,
imported only when the command line asks for them, so ``prismcache stats`` never imports the
HTTP server).

A registering function has the signature ``register(subparsers) -> None`` and sets
``func=callable(args) -> int`` on the parser it adds.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from prismcache.errors import ConfigError

__all__ = ["SUBCOMMANDS", "main"]

#: subcommand name -> "module:register function"
SUBCOMMANDS: dict[str, str] = {
    "demo": "prismcache.demo:register",
    "stats": "prismcache.commands:register_stats",
    "config": "prismcache.commands:register_config",
    "serve": "prismcache.server.cli:register",
    "data": "prismcache.evaluation.cli:register_data",
    "eval": "prismcache.evaluation.cli:register_eval",
    "replay": "prismcache.evaluation.cli:register_replay",
    "calibrate": "prismcache.evaluation.cli:register_calibrate",
    "report": "prismcache.report:register",
    "labels": "prismcache.labels:register",
    "tune": "prismcache.tune.run:register",
}


def _parser(only: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prismcache", description="A category-aware semantic cache for LLM serving.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in SUBCOMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(run `prismcache {name} --help`)")
            continue
        module, _, function = target.partition(":")
        try:
            register = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            stub = sub.add_parser(name, help=f"unavailable: {exc}")
            stub.set_defaults(func=lambda args, exc=exc: _unavailable(exc), unavailable=True)
            continue
        register(sub)
    return parser


def _unavailable(exc: Exception) -> int:
    print(f"prismcache: this command is unavailable here: {exc}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the subcommand being run (keeps `prismcache stats` light).
    only = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = _parser(only)
    args, extra = parser.parse_known_args(argv)
    # An unavailable command's options are unknown to its stub: say which extra it needs
    # rather than "unrecognized arguments".
    if extra and not getattr(args, "unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        _parser(None).print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:  # a bad config is the user's to fix: the message, no traceback
        print(f"prismcache {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
