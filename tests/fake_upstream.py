"""A small real HTTP server that speaks the OpenAI API, for the proxy's tests and benchmarks.

It answers chat completions (streaming and not), completions, embeddings and models, counts
its calls, and can be told to be slow, to fail with a status, to cut a stream off, to stop at
``finish_reason: length`` or to call a tool, and to saturate: beyond ``max_inflight``
generations in flight it answers 429 (or queues them, serving ``max_inflight`` at a time).
Every answer names the call that made it (``"reply #3 to: <query>"``), so a test can tell a
cached answer from a fresh one; a request's ``metadata.answer_key`` is echoed at the end of the
answer (``"... [key=<answer_key>]"``) so a benchmark can check that a hit was correct.

Run it alone (the benchmarks do); every failure mode is a flag (``--help`` lists them)::

    python tests/fake_upstream.py --port 9000 --latency 0.05
    python tests/fake_upstream.py --port 9000 --status 503          # every generation fails
    python tests/fake_upstream.py --port 9000 --cut-after 3         # streams break off
    python tests/fake_upstream.py --port 9000 --finish-reason content_filter
    python tests/fake_upstream.py --port 9000 --tool-call
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["Behaviour", "FakeUpstream", "ServerThread"]


@dataclass
class Behaviour:
    """What the fake upstream does with the next requests (change fields at will).

    Attributes:
        latency: seconds to wait before answering (a stream's first byte included).
        status: answer every generation request with this HTTP status and an OpenAI-style
            error body when not 200.
        finish_reason: the finish reason of every answer.
        tool_call: answer with a tool call instead of text.
        cut_after: drop the connection after this many content chunks of a stream.
        chunk_delay: seconds between stream chunks.
        max_inflight: generations served at once (``None``: unlimited); the rest get
            ``overflow``: ``"429"`` (an immediate rate-limit error) or ``"queue"`` (wait).
        overflow: what happens beyond ``max_inflight``.
        text: answer every generation with exactly this text (``None``: a numbered reply).
    """

    latency: float = 0.0
    status: int = 200
    finish_reason: str = "stop"
    tool_call: bool = False
    cut_after: int | None = None
    chunk_delay: float = 0.0
    max_inflight: int | None = None
    overflow: str = "429"
    text: str | None = None


class FakeUpstream:
    """The fake OpenAI server's state and its Starlette app."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.calls: Counter[str] = Counter()
        self.authorizations: list[str | None] = []
        self.others: list[tuple[str, str, str | None]] = []  # (method, raw path, authorization)
        self.streams_finished = 0
        self.streams_aborted = 0
        self.inflight = 0
        self.rejected = 0  # 429s sent because of max_inflight
        self._slots: asyncio.Semaphore | None = None
        self._serial = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._generate, methods=["POST"]),
            Route("/v1/completions", self._generate, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/{rest:path}", self._other, methods=["GET", "POST", "DELETE"]),
        ])

    def reset(self) -> None:
        """Forget calls and restore the default behaviour."""
        self.behaviour = Behaviour()
        self.calls.clear()
        self.authorizations.clear()
        self.others.clear()
        self.streams_finished = self.streams_aborted = 0
        self.rejected = 0
        self._slots = None

    @property
    def generations(self) -> int:
        """Chat and text completion calls so far."""
        return self.calls["chat"] + self.calls["completions"]

    async def _generate(self, request: Request) -> Response:
        b = self.behaviour
        if b.max_inflight is None:
            return await self._generation(request)
        if b.overflow == "429" and self.inflight >= b.max_inflight:
            self.rejected += 1
            return JSONResponse({"error": {"message": "too many requests in flight",
                                           "type": "rate_limit_error", "param": None,
                                           "code": "rate_limit_exceeded"}}, status_code=429)
        if self._slots is None:  # created on the server's own event loop
            self._slots = asyncio.Semaphore(b.max_inflight)
        self.inflight += 1
        try:
            async with self._slots:
                return await self._generation(request)
        finally:
            self.inflight -= 1

    async def _generation(self, request: Request) -> Response:
        chat = request.url.path.endswith("/chat/completions")
        self.calls["chat" if chat else "completions"] += 1
        self.authorizations.append(request.headers.get("authorization"))
        self._serial += 1
        serial, b = self._serial, self.behaviour
        try:
            body = json.loads(await request.body())
            if chat:
                query = body["messages"][-1].get("content")
            else:
                query = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
            if not isinstance(body.get("model"), str):
                raise TypeError("model")
        except (ValueError, LookupError, TypeError, AttributeError) as exc:  # a real server's 400
            return JSONResponse({"error": {"message": f"bad request: {exc!r}",
                                           "type": "invalid_request_error", "param": None,
                                           "code": None}}, status_code=400)
        if b.latency:
            await asyncio.sleep(b.latency)
        if b.status != 200:
            return JSONResponse({"error": {"message": f"upstream says {b.status}",
                                           "type": "server_error", "param": None,
                                           "code": None}}, status_code=b.status)
        text = f"reply #{serial} to: {query}" if b.text is None else b.text
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and metadata.get("answer_key"):
            text += f" [key={metadata['answer_key']}]"
        head = {"id": f"cmpl-{serial}", "created": int(time.time()), "model": body["model"]}
        usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return StreamingResponse(
                self._stream(head, chat, text, b, usage if options.get("include_usage") else None),
                media_type="text/event-stream")
        if not chat:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": b.finish_reason}
            return JSONResponse({**head, "object": "text_completion", "choices": [choice],
                                 "usage": usage})
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = b.finish_reason
        if b.tool_call:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": "{}"}}]}
            finish = "tool_calls"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice],
                             "usage": usage})

    async def _stream(self, head: dict[str, Any], chat: bool, text: str, b: Behaviour,
                      usage: dict[str, int] | None = None) -> AsyncIterator[bytes]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(part: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, **part, "logprobs": None, "finish_reason": finish}
            return b"data: " + json.dumps({**head, "object": kind,
                                           "choices": [choice]}).encode() + b"\n\n"

        try:
            if chat:
                yield event({"delta": {"role": "assistant", "content": ""}})
            for i, word in enumerate(text.split(" ")):
                if b.cut_after is not None and i >= b.cut_after:
                    raise ConnectionAbortedError("fake upstream cuts the stream off")
                piece = word if i == 0 else " " + word
                yield event({"delta": {"content": piece}} if chat else {"text": piece})
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
            if chat and b.tool_call:
                yield event({"delta": {"tool_calls": [{"index": 0, "id": "call_1",
                                                       "type": "function", "function": {
                                                           "name": "lookup",
                                                           "arguments": "{}"}}]}})
            finish = "tool_calls" if chat and b.tool_call else b.finish_reason
            yield event({"delta": {}} if chat else {"text": ""}, finish)
            if usage is not None:  # stream_options.include_usage: a last chunk, no choices
                yield b"data: " + json.dumps({**head, "object": kind, "choices": [],
                                              "usage": usage}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            self.streams_finished += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.streams_aborted += 1
            raise

    async def _embeddings(self, request: Request) -> Response:
        self.calls["embeddings"] += 1
        body = json.loads(await request.body())
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.5, -0.5, 0.25]}
                for i in range(len(inputs))]
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": 3, "total_tokens": 3}})

    async def _models(self, request: Request) -> Response:
        self.calls["models"] += 1
        self.authorizations.append(request.headers.get("authorization"))
        return JSONResponse({"object": "list", "data": [
            {"id": "m1", "object": "model", "created": 0, "owned_by": "fake"}]})


    async def _other(self, request: Request) -> Response:
        """Any other path (files, batches, responses, audio, ...): record who asked for what,
        and echo it, so a test can tell what reached the upstream and with which key."""
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("ascii", "replace")
        self.others.append((request.method, path, request.headers.get("authorization")))
        body = await request.body()
        return JSONResponse({"object": "echo", "method": request.method, "path": path,
                             "query": request.url.query, "bytes": len(body),
                             "content_type": request.headers.get("content-type")})


class ServerThread:
    """Run an ASGI app under a real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app: Any, *, timeout_graceful_shutdown: float | None = None,
                 port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=timeout_graceful_shutdown)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        """Start serving; return once the server accepts connections (or raise)."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Shut down gracefully and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


@contextmanager
def serving_upstream() -> Iterator[FakeUpstream]:
    """A :class:`FakeUpstream` under a :class:`ServerThread`, its ``url`` set to the server's
    ``.../v1``; stopped on exit (the tests' ``upstream`` fixtures)."""
    fake = FakeUpstream()
    server = ServerThread(fake.app).start()
    fake.url = server.url + "/v1"  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve the fake upstream on a port until interrupted; the flags set its
    :class:`Behaviour`, so failures can be rehearsed by hand."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="examples: --status 503 (every generation fails); --cut-after 3 (streams break "
               "after 3 chunks: the proxy answers an error event and stores nothing); "
               "--finish-reason content_filter (answers the proxy never stores); "
               "--tool-call (answers that call a tool, never stored)")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds before each answer (a stream's first byte included)")
    parser.add_argument("--chunk-delay", type=float, default=0.0,
                        help="seconds between stream chunks")
    parser.add_argument("--status", type=int, default=200,
                        help="answer every generation with this HTTP status (an OpenAI-style "
                             "error body when not 200)")
    parser.add_argument("--finish-reason", default="stop",
                        help="finish_reason of every answer (stop, length, content_filter, ...)")
    parser.add_argument("--tool-call", action="store_true",
                        help="answer with a tool call instead of text")
    parser.add_argument("--cut-after", type=int, default=None, metavar="N",
                        help="drop the connection after N content chunks of a stream")
    parser.add_argument("--max-inflight", type=int, default=None,
                        help="generations served at once; the rest get --overflow")
    parser.add_argument("--overflow", choices=("429", "queue"), default="429")
    args = parser.parse_args(argv)
    fake = FakeUpstream()
    fake.behaviour = Behaviour(
        latency=args.latency, chunk_delay=args.chunk_delay, status=args.status,
        finish_reason=args.finish_reason, tool_call=args.tool_call, cut_after=args.cut_after,
        max_inflight=args.max_inflight, overflow=args.overflow)
    uvicorn.run(fake.app, host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
