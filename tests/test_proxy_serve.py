"""``prismcache serve`` as a real process: start-up, and shutdown on SIGTERM/SIGINT (in-flight
requests finish, the cache is closed, the snapshot written, SQLite's side files removed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import TEST_CONFIG
from fake_upstream import FakeUpstream
from proxy_support import upstream, user  # noqa: F401 - fixtures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A ``prismcache serve`` subprocess and where it keeps its state."""

    def __init__(self, tmp: Path, upstream_url: str, *options: str, **server: Any) -> None:
        self.db = tmp / "cache.db"
        self.snapshot = tmp / "snapshot"
        self.port = free_port()
        config = {**TEST_CONFIG, "default_category": "loose", "store": f"sqlite:///{self.db}",
                  "snapshot": str(self.snapshot), "server": {"shutdown_timeout": "10s",
                                                             **server}}
        path = tmp / "prismcache.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = (tmp / "serve.log").open("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prismcache.cli", "serve", "--config", str(path),
             "--upstream", upstream_url, "--port", str(self.port), *options],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prismcache serve did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=30)
        self.log.close()
        return code


@pytest.fixture
def serve(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Any]:
    upstream.reset()
    started: list[Served] = []

    def start(*options: str, **server: Any) -> Served:
        served = Served(tmp_path, upstream.url, *options, **server)  # type: ignore[attr-defined]
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_closes_the_cache_and_exits_0(serve, upstream, sig) -> None:
    served = serve()
    body = {"model": "m1", "messages": user("How do I reset my password?")}
    assert httpx.post(served.url + "/v1/chat/completions", json=body).status_code == 200
    upstream.behaviour.latency = 1.0
    answers: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: answers.append(httpx.post(
        served.url + "/v1/chat/completions", timeout=20,
        json={"model": "m1", "messages": user("a slow question in flight")})))
    slow.start()
    deadline = time.monotonic() + 10
    while upstream.generations < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    served.process.send_signal(sig)
    slow.join(timeout=20)
    code = served.process.wait(timeout=30)
    output = served.output()
    assert code == 0, output
    assert answers and answers[0].status_code == 200, output  # drained, not cut off
    assert (served.snapshot / "manifest.json").exists(), output
    assert served.db.exists()
    assert not Path(f"{served.db}-wal").exists() and not Path(f"{served.db}-shm").exists()
    assert "Traceback" not in output
    assert f"cache store sqlite:///{served.db.resolve()}" in output  # where the cache lives


@pytest.mark.parametrize("options", [(), ("--access-log",)])
def test_the_access_log_is_off_unless_asked_for(serve, options) -> None:
    served = serve(*options)
    body = {"model": "m1", "messages": user("How do I reset my password?")}
    assert httpx.post(served.url + "/v1/chat/completions", json=body).status_code == 200
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    logged = '"POST /v1/chat/completions HTTP/1.1" 200' in served.output()
    assert logged == bool(options), served.output()


BLOCK_SERVER_EXTRA = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'starlette', 'uvicorn'}:
            raise ImportError(f'blocked {name}')
sys.meta_path.insert(0, Block())
from prismcache.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_serve_without_the_extra_names_it() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCK_SERVER_EXTRA, "serve", "--upstream",
                          "http://127.0.0.1:9/v1", "--port", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "pip install 'prismcache[server]'" in out.stderr
    assert "unrecognized arguments" not in out.stderr


def test_fake_upstream_failure_modes_are_flags() -> None:
    port = free_port()
    script = Path(__file__).with_name("fake_upstream.py")
    process = subprocess.Popen([sys.executable, str(script), "--port", str(port),
                                "--finish-reason", "content_filter", "--cut-after", "1"])
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = {"model": "m1", "messages": user("hello there friend")}
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.post(url, json=body, timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert answer.json()["choices"][0]["finish_reason"] == "content_filter"
        with pytest.raises(httpx.RemoteProtocolError):  # the stream is cut off
            httpx.post(url, json={**body, "stream": True}, timeout=5).read()
    finally:
        process.terminate()
        process.wait(timeout=30)
