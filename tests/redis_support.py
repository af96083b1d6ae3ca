"""A real ``redis-server`` on a free loopback port, for the Redis store, sync and cluster tests.

``redis_server`` is session-scoped: one server for the whole run, started on first use,
stopped at the end (its process group killed). Tests that use it get a flushed database from
``redis_url``. Skips (with the reason printed) only when ``redis-server`` cannot be found or
does not start; a server that starts and then misbehaves is a failure.

Test modules import what they use: ``from redis_support import redis_server, redis_url``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process without persistence, restartable on the same port."""

    def __init__(self, binary: str, directory: Path, *, args: tuple[str, ...] = (),
                 config: str | None = None) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.args = args  # extra command-line options (--replicaof, --cluster-enabled, ...)
        self.config = config  # a config file's text, for servers that rewrite it (Sentinel)
        self.log = directory / ("redis.log" if not (args or config) else f"redis-{self.port}.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server; return once it answers PING (else raise ``RuntimeError``)."""
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        if self.config is not None:
            path = self.directory / f"sentinel-{self.port}.conf"
            if not path.exists():
                path.write_text(f"port {self.port}\nbind 127.0.0.1\n{self.config}")
            command = [self.binary, str(path), "--sentinel"]
        else:
            command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save",
                       "", "--appendonly", "no", "--dir", str(self.directory),
                       "--protected-mode", "yes", *self.args]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=self.directory)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                   + self.log.read_text()[-500:])
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING in time")

    def ping(self) -> bool:
        """True when the server answers ``PING`` with ``+PONG``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        """Send one inline command and return the raw first reply (for FLUSHALL, DEBUG)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            return sock.recv(4096)

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Kill the server's process group and wait for it; idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def redis_binary() -> str:
    """The path of ``redis-server``; skips the test (reason printed) when there is none."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
    if binary is None:
        reason = "redis-server not found on PATH or at /usr/bin/redis-server"
        print(f"\nSKIP Redis tests: {reason}")
        pytest.skip(reason)
    return binary


def start_all(servers: list[RedisServer], what: str) -> None:
    """Start ``servers``; skips (reason printed) when the first cannot run at all."""
    for n, server in enumerate(servers):
        try:
            server.start()
        except (OSError, RuntimeError) as exc:
            for other in servers:
                other.stop()
            if n:
                raise
            reason = f"{what} could not run: {exc}"
            print(f"\nSKIP {what} tests: {reason}")
            pytest.skip(reason)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms until it is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; skips if it cannot be found or started."""
    binary = redis_binary()
    directory = Path(tempfile.mkdtemp(prefix="prism-redis-"))
    server = RedisServer(binary, directory)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        reason = f"redis-server could not run: {exc}"
        print(f"\nSKIP Redis tests: {reason}")
        pytest.skip(reason)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of a running, empty Redis (restarted if a previous test stopped it)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    assert redis_server.command("FLUSHALL").startswith(b"+OK")
    return redis_server.url


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of each kind of store in turn: memory, a SQLite file, a running empty Redis
    (needs ``redis_server`` and ``redis_url`` imported where it is used)."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("redis_url"))


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is valid and free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterOfRedis:
    """A Redis Cluster on loopback: ``masters`` primaries with one replica each, made by
    ``redis-cli --cluster create`` (slots in equal contiguous ranges)."""

    def __init__(self, binary: str, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.nodes: list[RedisServer] = []
        for _ in range(2 * masters):
            port = free_cluster_port()
            node = RedisServer(binary, directory, args=(
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0"))
            node.port = port
            node.log = directory / f"redis-{port}.log"
            self.nodes.append(node)

    def start(self) -> None:
        """Start the nodes, create the cluster, wait until every node says ``cluster_state:ok``."""
        start_all(self.nodes, "redis-server --cluster-enabled")
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        done = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-800:]}"
                               f"{done.stderr[-800:]}")
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node reports ``cluster_state:ok`` and all slots served."""
        wait_until(lambda: all(b"cluster_state:ok" in n.command("CLUSTER", "INFO")
                               for n in self.nodes if n.running), timeout, "cluster state ok")

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming two of the nodes as seeds."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def masters(self) -> list[RedisServer]:
        """The running nodes that are primaries now."""
        return [n for n in self.nodes
                if n.running and b"role:master" in n.command("INFO", "replication")]

    def flush(self) -> None:
        """Empty every primary."""
        for node in self.masters():
            assert node.command("FLUSHALL").startswith(b"+OK")

    def stop(self) -> None:
        """Kill every node; idempotent."""
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterOfRedis]:
    """A 3-primary, 3-replica Redis Cluster for the session; skips when it cannot run."""
    binary = redis_binary()
    directory = Path(tempfile.mkdtemp(prefix="prism-cluster-"))
    cluster = ClusterOfRedis(binary, directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def cluster_url(redis_cluster: ClusterOfRedis) -> str:
    """The URL of the running cluster, every primary emptied (stopped nodes restarted)."""
    for node in redis_cluster.nodes:
        if not node.running:
            node.start()
    redis_cluster.wait_ok()
    redis_cluster.flush()
    return redis_cluster.url
