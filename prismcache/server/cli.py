"""``prismcache serve``: run the caching proxy under uvicorn, in one process or several.

With ``--workers N`` (N > 1) uvicorn's supervisor runs N worker processes on one socket; each
opens its own cache over the one shared store, and the store's change feed
(:mod:`prismcache.sync`) keeps their indexes in step, so an answer stored through one worker is
a hit through every other. That needs a store that keeps a change feed (``redis://``); the
command refuses one that does not, rather than serve from indexes that drift apart.

The server's cache embeds through a :class:`~prismcache.embedders.BatchingEmbedder`, so that
concurrent lookups share one model call (``server.embed_batch_max``, ``embed_batch_wait_ms``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from prismcache.commands import store_location
from prismcache.config import CacheConfig, load_config
from prismcache.errors import ConfigError, PrismCacheError
from prismcache.stores import redact_url

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from prismcache.cache import SemanticCache
    from prismcache.server.settings import ServerSettings

__all__ = ["register", "serve", "server_cache", "settle_gc", "worker_app"]

log = logging.getLogger("prismcache.server")
#: allocations between two young-generation collections of a serving process (CPython: 700)
GC_YOUNG_THRESHOLD = 10_000
#: how ``serve --workers`` hands its arguments to the worker processes uvicorn spawns
_WORKER_ARGS = "PRISMCACHE_SERVE_ARGS"


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
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="worker processes sharing the store (1); more than 1 needs a "
                             "store with a change feed (redis://)")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per request (uvicorn's access log; off by default: "
                             "it costs ~14%% of the event loop's time per cache hit)")
    parser.set_defaults(func=serve)


def _settings(options: dict[str, Any]) -> tuple[CacheConfig, ServerSettings]:
    """The config and server settings ``serve``'s options name; raises ConfigError."""
    from prismcache.server import ServerSettings

    config = load_config(options.get("config"))
    if options.get("store"):
        config = dataclasses.replace(config, store=options["store"])
    server = dict(config.server)
    if options.get("upstream"):
        server["upstream"] = options["upstream"]
    settings = ServerSettings.from_config(server)
    if not settings.upstream:
        raise ConfigError("no upstream: pass --upstream URL or set server.upstream")
    return config, settings


def server_cache(config: CacheConfig, settings: ServerSettings, *,
                 workers: int = 1) -> SemanticCache:
    """Open the cache a server runs on: the configured embedder, wrapped in a
    :class:`~prismcache.embedders.BatchingEmbedder` unless ``embed_batch_max`` is 1, with
    one model call at a time per core and worker process (one of ``workers``).
    Raises what :meth:`SemanticCache.open` raises."""
    from prismcache.cache import SemanticCache
    from prismcache.embedders import BatchingEmbedder, open_embedder

    embedder = open_embedder(config.embedder)
    if settings.embed_batch_max > 1:
        embedder = BatchingEmbedder(embedder, max_batch=settings.embed_batch_max,
                                    max_wait=settings.embed_batch_wait_ms / 1000,
                                    concurrency=max(1, (os.cpu_count() or 1) // workers))
    return SemanticCache.open(config, embedder=embedder)


def serve(args: argparse.Namespace) -> int:
    """Open the cache, run the proxy until SIGINT/SIGTERM (finishing in-flight requests for up
    to ``server.shutdown_timeout``), close the cache. Returns the exit code: 2 on a bad
    config (or ``--workers`` over a store without a change feed), 1 when the cache cannot
    open."""
    import uvicorn

    from prismcache.server import create_app

    options = {"config": args.config, "store": args.store, "upstream": args.upstream}
    try:
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {args.workers}")
        config, settings = _settings(options)
    except ConfigError as exc:
        print(f"prismcache serve: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _serve_workers(args, options, config, settings)
    try:
        cache = server_cache(config, settings)
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
                                access_log=args.access_log,
                                timeout_graceful_shutdown=settings.shutdown_timeout or None)
        settle_gc()
        _graceful_server(served).run()
    finally:
        cache.close()
        log.info("cache closed")
    return 0


def _serve_workers(args: argparse.Namespace, options: dict[str, Any], config: CacheConfig,
                   settings: ServerSettings) -> int:
    import uvicorn

    from prismcache.stores import open_store
    from prismcache.sync import ChangeFeed

    try:
        store = open_store(config.store)
    except PrismCacheError as exc:
        print(f"prismcache serve: cannot open the store at {redact_url(config.store)}: {exc}",
              file=sys.stderr)
        return 1
    try:
        if not isinstance(store, ChangeFeed):
            print(f"prismcache serve: --workers {args.workers} needs a store with a change "
                  f"feed to keep the workers' indexes in step (redis://...); "
                  f"{redact_url(config.store)} has none", file=sys.stderr)
            return 2
    finally:
        store.close()
    os.environ[_WORKER_ARGS] = json.dumps({**options, "workers": args.workers})
    uvicorn.run("prismcache.server.cli:worker_app", factory=True, workers=args.workers,
                host=args.host, port=args.port, access_log=args.access_log,
                timeout_graceful_shutdown=settings.shutdown_timeout or None)
    return 0


def worker_app() -> Starlette:
    """The app of one ``serve --workers`` process (uvicorn calls this factory in each): opens
    its own cache from the options the parent left in the environment, and closes it when
    the app shuts down."""
    from prismcache.server import create_app

    options = json.loads(os.environ[_WORKER_ARGS])
    config, settings = _settings(options)
    cache = server_cache(config, settings, workers=options["workers"])
    app = create_app(cache, settings)
    settle_gc()
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with inner(app):
                yield
        finally:
            cache.close()

    app.router.lifespan_context = lifespan
    return app


def settle_gc() -> None:
    """Set a serving process's cyclic garbage collector for a server: call once, when the
    cache is open and the app built, before the first request.

    Everything allocated so far (the model, the tokenizer, the loaded index and entries, the
    modules) is moved out of the collector's generations (``gc.freeze``), and the young
    generation is collected every :data:`GC_YOUNG_THRESHOLD` allocations instead of 700. A
    collection holds the GIL, so it stalls the event loop and every request in flight: over
    2,000 misses from 50 clients the collector's CPU time fell from 250-280 ms to 80-110 ms
    (start-up included) and its young collections from ~310 to ~110 (``docs/benchmarks.md``,
    issue 13, fourth pass).
    Objects are still freed by reference counting as before; a cycle is collected later, after
    more allocations. Process-wide, so only the ``serve`` command calls it, never the library.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


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
