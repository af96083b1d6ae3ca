"""``prismcache serve --workers 2`` over one real Redis: an answer stored through one worker
process is served as a hit by the other (their indexes follow the store's change feed); a store
without a change feed is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream, serving_upstream
from redis_support import free_port, redis_server, redis_url  # noqa: F401

CONFIG = """\
store: "memory://"
embedder: "hash:64"
classifier: {examples: null}
rules: []
default_category: loose
categories:
  loose: {threshold: 0.5, ttl: 1h, quota: 1.0}
"""
SERVE = [sys.executable, "-c",
         "import sys; from prismcache.cli import main; sys.exit(main(sys.argv[1:]))", "serve"]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with serving_upstream() as fake:
        yield fake


def _client(port: int) -> httpx.Client:
    """A client that keeps one connection, hence talks to one worker."""
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0,
                        headers={"authorization": "Bearer sk-workers"},
                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))


def _ask(client: httpx.Client, question: str, *, store: bool = True) -> str:
    response = client.post("/v1/chat/completions",
                           headers={} if store else {"cache-control": "no-store"},
                           json={"model": "m1", "messages": [{"role": "user",
                                                              "content": question}]})
    assert response.status_code == 200, response.text
    return response.headers["x-prism-cache"]


def test_a_hit_stored_through_one_worker_is_served_by_another(
        redis_url: str, upstream: FakeUpstream, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "prism.yaml"
    config.write_text(CONFIG)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SERVE, "--config", str(config), "--store", redis_url, "--workers", "2",
             "--upstream", upstream.url, "--port", str(port)],  # type: ignore[attr-defined]
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    clients: dict[int, httpx.Client] = {}
    try:
        deadline = time.monotonic() + 60
        while len(clients) < 2:  # connections land on either worker: find one on each
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            assert process.poll() is None, log.read_text()[-2000:]
            client = _client(port)
            try:
                pid = client.get("/healthz").json()["pid"]
            except httpx.TransportError:
                client.close()
                time.sleep(0.05)
                continue
            if pid in clients:
                client.close()
            else:
                clients[pid] = client
        first, second = clients.values()
        assert _ask(first, "how do I rotate my api key") == "miss"
        deadline = time.monotonic() + 10
        while _ask(second, "how do I rotate my api key", store=False) != "hit":
            assert time.monotonic() < deadline, "the other worker never served the hit"
            time.sleep(0.02)
    finally:
        for client in clients.values():
            client.close()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_workers_refuse_a_store_without_a_change_feed(tmp_path: Path) -> None:
    config = tmp_path / "prism.yaml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [*SERVE, "--config", str(config), "--store", f"sqlite:///{tmp_path}/p.db",
         "--workers", "2", "--upstream", "http://127.0.0.1:9/v1"],
        check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "change feed" in result.stderr
