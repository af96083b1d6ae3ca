"""Several ``prismcache serve`` processes over one real Redis, or a real Redis Cluster, behind
no load balancer but the test: what one stores the others serve, invalidations reach all, a
restarted proxy rebuilds, a Redis outage (or a cluster primary's failover) turns them into
pass-throughs and its end restores caching."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream, serving_upstream
from redis_support import (  # noqa: F401 - fixtures
    ClusterOfRedis,
    RedisServer,
    cluster_url,
    free_port,
    redis_cluster,
    redis_server,
    redis_url,
)

ADMIN_TOKEN = "cluster-admin-token"
CLIENT_KEY = "sk-cluster-client"  # pass-through mode: one key, one tenant on every proxy
CONFIG = textwrap.dedent("""\
    store: "memory://"
    embedder: "hash:64"
    classifier: {examples: null}
    rules: []
    default_category: loose
    capacity: {entries: 1000}
    defaults: {verifier: none}
    categories:
      strict: {threshold: 0.99, ttl: 1h, quota: 0.5}
      loose: {threshold: 0.5, ttl: 1h, quota: 0.5}
    server:
      admin_token_env: PRISM_ADMIN_TOKEN
""")


class ProxyProcess:
    """One ``prismcache serve`` subprocess in its own process group."""

    def __init__(self, name: str, port: int, args: list[str], log: Path) -> None:
        self.name, self.port, self.args, self.log = name, port, args, log
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0,
                                 headers={"authorization": f"Bearer {CLIENT_KEY}"})

    def start(self) -> ProxyProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from prismcache.cli import main; "
                 "sys.exit(main(sys.argv[1:]))", *self.args, "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PRISM_ADMIN_TOKEN": ADMIN_TOKEN},
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"proxy {self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"proxy {self.name} not ready: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def ask(self, question: str, *, store: bool = True) -> httpx.Response:
        """A chat completion; ``store=False`` sends ``Cache-Control: no-store`` so polling
        never stores an answer of its own."""
        headers = {} if store else {"cache-control": "no-store"}
        response = self.http.post("/v1/chat/completions", headers=headers, json={
            "model": "m1", "messages": [{"role": "user", "content": question}]})
        assert response.status_code == 200, (self.name, response.status_code, response.text)
        return response

    def cached(self, question: str) -> str:
        return self.ask(question, store=False).headers["x-prism-cache"]


def poll(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with serving_upstream() as fake:
        yield fake


@pytest.fixture
def cluster(redis_url: str, upstream: FakeUpstream,  # noqa: F811
            tmp_path: Path) -> Iterator[dict[str, ProxyProcess]]:
    yield from _proxies(redis_url, upstream, tmp_path, "ABC")


@pytest.fixture
def on_redis_cluster(cluster_url: str, upstream: FakeUpstream,  # noqa: F811
                     tmp_path: Path) -> Iterator[dict[str, ProxyProcess]]:
    yield from _proxies(cluster_url, upstream, tmp_path, "AB")


def _proxies(store: str, upstream: FakeUpstream, tmp_path: Path,
             names: str) -> Iterator[dict[str, ProxyProcess]]:
    config = tmp_path / "prism.yaml"
    config.write_text(CONFIG)
    args = ["serve", "--config", str(config), "--store", store,
            "--upstream", upstream.url]  # type: ignore[attr-defined]
    proxies = {name: ProxyProcess(name, free_port(), args, tmp_path / f"{name}.log")
               for name in names}
    try:
        for proxy in proxies.values():
            proxy.start()
        for proxy in proxies.values():
            proxy.wait_ready()
        yield proxies
    finally:
        for proxy in proxies.values():
            proxy.kill()
            proxy.http.close()


def test_three_proxies_over_one_redis(cluster: dict[str, ProxyProcess],
                                      redis_server: RedisServer,  # noqa: F811
                                      upstream: FakeUpstream) -> None:
    a, b, c = cluster["A"], cluster["B"], cluster["C"]

    # 1. stored through A: a hit through B and C within a second (paraphrase: semantic tier)
    assert a.ask("how do I reset my password").headers["x-prism-cache"] == "miss"
    for proxy in (b, c):
        poll(lambda p=proxy: p.cached("how can I reset my password?") == "hit", 1.0,
             f"A's answer served by {proxy.name}")
    hit = b.ask("how can I reset my password?", store=False)
    assert hit.json()["choices"][0]["message"]["content"].endswith("how do I reset my password")

    # 2. an invalidation through C's admin API stops the hits on A and B
    with httpx.Client(base_url=f"http://127.0.0.1:{c.port}", timeout=10.0) as admin:
        done = admin.post("/admin/invalidate", json={"all": True},
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert done.status_code == 200 and done.json()["deleted"] == 1
    for proxy in (a, b):
        poll(lambda p=proxy: p.cached("how do I reset my password") == "miss", 1.0,
             f"invalidation seen by {proxy.name}")

    # 3. B killed and restarted: it rebuilds its index from Redis and serves hits again
    a.ask("what are your opening hours")
    poll(lambda: b.cached("what are your opening hours?") == "hit", 1.0, "stored before kill")
    b.kill()
    b.start().wait_ready()
    assert b.cached("what are your opening hours?") == "hit"

    # 4. Redis stopped: every proxy is a pass-through, clients still get 200s from upstream
    redis_server.stop()
    before = upstream.generations
    for proxy in (a, b, c):
        started = time.monotonic()
        assert proxy.ask("what are your opening hours?").headers["x-prism-cache"] == "miss"
        assert proxy.ask("a brand new question during the outage").status_code == 200
        assert time.monotonic() - started < 3.0
    assert upstream.generations == before + 6

    # 5. Redis back (empty: no persistence): caching resumes without restarting the proxies
    redis_server.start()
    poll(lambda: a.ask("is there a student discount").headers["x-prism-cache"] == "miss"
         and _entries(a) > 0, 5.0, "A stores again")
    for proxy in (b, c):
        poll(lambda p=proxy: p.cached("is there a student discount?") == "hit", 2.0,
             f"{proxy.name} serves again")


def _entries(proxy: ProxyProcess) -> int:
    with httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}", timeout=10.0) as admin:
        stats = admin.get("/admin/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    return sum(c.get("entries", 0) for c in stats.json()["categories"].values())


def test_two_proxies_over_a_redis_cluster(on_redis_cluster: dict[str, ProxyProcess],
                                          redis_cluster: ClusterOfRedis,  # noqa: F811
                                          upstream: FakeUpstream) -> None:
    a, b = on_redis_cluster["A"], on_redis_cluster["B"]
    questions = [f"how do I reset the password of account number {n}" for n in range(12)]

    # 1. stored through A (entries in every bucket): hits through B
    for question in questions:
        assert a.ask(question).headers["x-prism-cache"] == "miss"
    for question in questions:
        poll(lambda q=question: b.cached(q) == "hit", 2.0, "A's answer served by B")

    # 2. an invalidation through B's admin API stops the hits on A
    with httpx.Client(base_url=f"http://127.0.0.1:{b.port}", timeout=10.0) as admin:
        done = admin.post("/admin/invalidate", json={"all": True},
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert done.status_code == 200 and done.json()["deleted"] == len(questions)
    for question in questions:
        poll(lambda q=question: a.cached(q) == "miss", 2.0, "invalidation seen by A")

    # 3. a primary killed: every request is answered (fail open) while its replica takes over
    for question in questions:
        a.ask(question)
    victim = redis_cluster.masters()[0]
    victim.stop()
    answered, started = 0, time.monotonic()
    while len(redis_cluster.masters()) < 3 or not _all_ok(redis_cluster):
        assert time.monotonic() - started < 30, "no failover within 30 s"
        for proxy in (a, b):
            t = time.monotonic()
            assert proxy.ask(questions[answered % len(questions)], store=False).status_code == 200
            assert time.monotonic() - t < 3.0
            answered += 1
    failover = time.monotonic() - started

    # 4. after the failover both proxies cache and share again, without a restart
    fresh = iter(range(1000))

    def shared() -> bool:
        question = f"is there a student discount for group {next(fresh)}"
        a.ask(question)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if b.cached(question) == "hit":
                return True
            time.sleep(0.02)
        return False

    poll(shared, 15.0, "caching resumes")
    hits = sum(b.cached(q) == "hit" for q in questions)
    print(f"failover took {failover:.1f} s, {answered} requests answered meanwhile; "
          f"{hits}/{len(questions)} entries written before it still hit")


def _all_ok(cluster: ClusterOfRedis) -> bool:
    return all(b"cluster_state:ok" in n.command("CLUSTER", "INFO")
               for n in cluster.nodes if n.running)
