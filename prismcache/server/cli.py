"""``prismcache serve``: run the caching proxy under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from prismcache.commands import store_location
from prismcache.config import load_config
from prismcache.errors import ConfigError, PrismCacheError
from prismcache.stores import redact_url

__all__ = ["register", "serve"]

log = logging.getLogger("prismcache.server")


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand to ``prismcache``'s argument parser."""
    parser = subparsers.add_parser(
        "serve", help="run the OpenAI-compatible caching proxy",
        description="Serve /v1/chat/completions and /v1/completions from the cache, "
                    "forwarding misses to the upstream. See docs/proxy.md.")
    parser.add_argument("--config", help="YAML config (default: the embedded defaults)")
    parser.add_argument("--upstream", metavar="URL",
                        help="the upstream's OpenAI base URL, e.g. http://localhost:8000/v1 "
                             "(overrides server.upstream)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (8080)")
    parser.add_argument("--store", metavar="URL", help="document store URL (overrides store:)")
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Open the cache, run the proxy until SIGINT/SIGTERM (finishing in-flight requests for up
    to ``server.shutdown_timeout``), close the cache. Returns the exit code: 2 on a bad
    config, 1 when the cache cannot open."""
    import uvicorn

    from prismcache.cache import SemanticCache
    from prismcache.server import ServerSettings, create_app

    try:
        config = load_config(args.config)
        if args.store:
            config = dataclasses.replace(config, store=args.store)
        server = dict(config.server)
        if args.upstream:
            server["upstream"] = args.upstream
        settings = ServerSettings.from_config(server)
        if not settings.upstream:
            raise ConfigError("no upstream: pass --upstream URL or set server.upstream")
    except ConfigError as exc:
        print(f"prismcache serve: {exc}", file=sys.stderr)
        return 2
    try:
        cache = SemanticCache.open(config)
    except PrismCacheError as exc:
        print(f"prismcache serve: cannot open the cache at {redact_url(config.store)}: {exc}",
              file=sys.stderr)
        return 1
    # Said once, where the operator looks first: the default store is a file in the working
    # directory, easy to lose track of.
    print(f"prismcache serve: cache store {store_location(config.store)}; upstream "
          f"{redact_url(settings.upstream)}; listening on http://{args.host}:{args.port}",
          file=sys.stderr, flush=True)
    try:
        app = create_app(cache, settings)
        served = uvicorn.Config(app, host=args.host, port=args.port,
                                timeout_graceful_shutdown=settings.shutdown_timeout or None)
        _graceful_server(served).run()
    finally:
        cache.close()
        log.info("cache closed")
    return 0


def _graceful_server(config: Any) -> Any:
    """A ``uvicorn.Server`` for ``config`` on which SIGINT and SIGTERM end ``run()`` normally.

    uvicorn re-raises the signal it caught once it has shut down, which kills the process
    (exit 143 on SIGTERM) before the caller can close the cache: no snapshot, SQLite's
    ``-wal``/``-shm`` files left behind. Here a signal starts the same graceful shutdown
    (in-flight requests drain for up to ``server.shutdown_timeout``) and ``run`` returns.
    """
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)
