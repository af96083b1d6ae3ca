"""``ProxyState.in_thread``: blocking cache calls on the proxy's own thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from prismcache import SemanticCache
from prismcache.server import ServerSettings, create_app
from prismcache.server.state import ProxyState

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


@pytest.fixture
def state():
    cache = SemanticCache.open({"store": "memory://", "embedder": "hash:64",
                                "classifier": {"examples": None}})
    app = create_app(cache, ServerSettings(upstream="http://127.0.0.1:9/v1"))
    prism: ProxyState = app.state.prism
    yield prism
    prism.threads.shutdown(wait=True)
    cache.close()


def test_runs_on_another_thread_in_the_callers_context(state: ProxyState) -> None:
    async def main() -> tuple[int, str, int]:
        VAR.set("request")
        return await state.in_thread(lambda a, *, b: (threading.get_ident(), VAR.get(), a + b),
                                     1, b=2)

    ident, seen, total = asyncio.run(main())
    assert ident != threading.get_ident() and seen == "request" and total == 3


def test_the_calls_exception_reaches_the_caller(state: ProxyState) -> None:
    def fail() -> None:
        raise ValueError("store broke")

    with pytest.raises(ValueError, match="store broke"):
        asyncio.run(state.in_thread(fail))


def test_a_cancelled_caller_waits_for_the_call_to_end(state: ProxyState) -> None:
    ended: list[float] = []

    def slow() -> None:
        time.sleep(0.3)
        ended.append(time.monotonic())

    async def main() -> float:
        task = asyncio.create_task(state.in_thread(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    cancelled_at = asyncio.run(main())
    assert ended and ended[0] <= cancelled_at  # the call had ended when the cancellation did
