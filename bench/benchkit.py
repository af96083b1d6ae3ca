"""What the benchmarks share: loopback ports, starting and stopping the fake upstream and
``prismcache serve`` processes, a minimal keep-alive HTTP/1.1 client, the hit workloads and
latency summaries (the HTTP benchmarks ``bench/proxy.py``, ``bench/cluster.py``,
``bench/overload.py``), and the **yardstick** every benchmark states its figures against.

The yardstick (:func:`yardstick`) is one plain single-query inference of the bundled int8
MiniLM: a default onnxruntime session limited to one intra-op thread, one 9-token query, no
padding, ``session.run`` alone. Machines (and the load of a shared one) differ by 2x on it, so
a figure divided by the yardstick measured in the same run travels between runs; an absolute
one does not.

The scripts run as ``python bench/<script>.py``, so this directory is on ``sys.path`` and they
``from benchkit import ...``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHAT_PATH = "/v1/chat/completions"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0,
             poll: float = 0.05) -> None:
    """Return once something accepts connections on ``port``; raise ``RuntimeError`` if
    ``proc`` exits first or ``timeout`` seconds pass (checking every ``poll`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(poll)
    raise RuntimeError(f"nothing listens on {port}")


def spawn(command: Sequence[str], *, cwd: str | Path | None = None,
          env: Mapping[str, str] | None = None,
          new_session: bool = False) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output discarded (``env=None`` inherits ours)."""
    return subprocess.Popen(list(command), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=new_session)


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """Terminate every process in ``procs``, then wait for each."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=timeout)


@contextmanager
def serving(command: Sequence[str], port: int, *, cwd: str | Path | None = None,
            env: Mapping[str, str] | None = None, new_session: bool = False,
            timeout: float = 60.0, poll: float = 0.05) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command``, wait until it listens on ``port`` (see :func:`wait_for`), yield
    the process; terminate it on exit, also when it never came up."""
    proc = spawn(command, cwd=cwd, env=env, new_session=new_session)
    try:
        wait_for(port, proc, timeout=timeout, poll=poll)
        yield proc
    finally:
        stop([proc])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds spent so far by process ``pid`` and its live descendants
    (``serve --workers``' worker processes), from ``/proc``; 0.0 for what has gone."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds spent so far by one thread ``tid`` of process ``pid`` (its
    main thread by default: a server's event loop), from ``/proc``; 0.0 once it has gone."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return 0.0


def upstream_command(port: int, *options: str) -> list[str]:
    """The command that runs ``tests/fake_upstream.py`` on ``port`` with ``options``."""
    return [PYTHON, str(ROOT / "tests" / "fake_upstream.py"), "--port", str(port), *options]


def serve_command(config: str | Path, port: int, upstream_url: str,
                  store: str | None = None, workers: int = 1) -> list[str]:
    """The command that runs ``prismcache serve`` with ``config`` on ``port`` in front of
    ``upstream_url`` (and over ``store``, when given; with ``workers`` processes)."""
    return [PYTHON, "-m", "prismcache.cli", "serve", "--config", str(config),
            *(["--store", store] if store is not None else []),
            *(["--workers", str(workers)] if workers > 1 else []),
            "--port", str(port), "--upstream", upstream_url]


class Conn:
    """One keep-alive HTTP/1.1 connection: POST JSON, read the whole answer."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> Conn:
        """Connect to 127.0.0.1 on the port; return ``self``."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(self, body: dict[str, Any], *, path: str = CHAT_PATH,
                   extra: str = "") -> tuple[int, dict[str, str], bytes]:
        """POST ``body`` as JSON to ``path`` (``extra``: more header lines, each ending in
        CRLF); return the status, the headers (lower-case names) and the body."""
        data = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer sk-bench\r\n{extra}content-length: {len(data)}\r\n\r\n"
            .encode() + data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body_bytes = await self.reader.readexactly(int(headers["content-length"]))
        return status, headers, body_bytes

    async def close(self) -> None:
        """Close the connection."""
        self.writer.close()
        await self.writer.wait_closed()


def chat(text: str) -> dict[str, Any]:
    """A one-turn chat completion request for model ``m1``."""
    return {"model": "m1", "messages": [{"role": "user", "content": text}]}


def gibberish(rng: random.Random, words: int = 8) -> str:
    """A query unlike any other (random letters share few trigrams or word pieces); 8 words
    make ~35 model tokens, 3 words ~13, about a real short query's."""
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))
                    for _ in range(words))


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank below, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values_ms: list[float]) -> str:
    """``p50 … ms  p90 …  p99 …  max …  (n=…)`` of latencies in milliseconds."""
    return (f"p50 {statistics.median(values_ms):7.2f} ms  p90 {pct(values_ms, 0.9):7.2f}  "
            f"p99 {pct(values_ms, 0.99):7.2f}  max {max(values_ms):7.2f}  (n={len(values_ms)})")


async def hits(ports: Sequence[int], bodies: list[dict[str, Any]],
               concurrency: int) -> tuple[float, list[float], int]:
    """Send ``bodies`` over ``concurrency`` connections spread round-robin over ``ports``;
    return (req/s, latencies ms, hits)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    hit_count = 0

    async def worker(port: int) -> None:
        nonlocal hit_count
        conn = await Conn(port).open()
        while not queue.empty():
            body = queue.get_nowait()
            t = time.perf_counter()
            status, headers, _ = await conn.post(body)
            latencies.append((time.perf_counter() - t) * 1000)
            hit_count += status == 200 and headers.get("x-prism-cache") == "hit"
        await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(ports[i % len(ports)]) for i in range(concurrency)))
    return len(bodies) / (time.perf_counter() - t0), latencies, hit_count


async def hit_workloads(ports: Sequence[int], base: str, n: int, concurrency: int,
                        fillers: Sequence[str], emit: Callable[[str], None]) -> None:
    """Measure exact-tier hits (``base`` ``n`` times) and semantic hits (``base`` plus two of
    ``fillers`` and a counter), after a warm-up; ``emit`` one result line for each. The
    proxies must already hold ``base``'s entry."""
    exact = [chat(base)] * n
    rng = random.Random(7)
    semantic = [chat(f"{base} {rng.choice(fillers)} {rng.choice(fillers)} {i}x")
                for i in range(n)]
    await hits(ports, exact[:300], concurrency)  # warm up
    for label, bodies in (("exact-tier hits", exact), ("semantic hits", semantic)):
        rate, lat, n_hit = await hits(ports, bodies, concurrency)
        emit(f"{label:16s} c={concurrency}: {rate:7.0f} req/s  {summary(lat)}  "
             f"hit rate {n_hit / len(bodies):.2f}")


#: wrk (``apt-get install wrk``), the load generator in C that costs the shared CPUs least
WRK = shutil.which("wrk")

_WRK_SCRIPT = """
local base, semantic = %(base)s, %(semantic)s
local fillers = {%(fillers)s}
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer sk-bench"}
local fixed = nil
threads = {}
i, hits, n = 0, 0, 0
function setup(thread) table.insert(threads, thread) end
local function body(q)
  return '{"model":"m1","messages":[{"role":"user","content":"' .. q .. '"}]}'
end
function init(args) fixed = wrk.format("POST", "%(path)s", headers, body(base)) end
function request()
  if not semantic then return fixed end
  i = i + 1
  local q = base .. " " .. fillers[(i * 7) %% #fillers + 1] .. " "
            .. fillers[(i * 13) %% #fillers + 1] .. " " .. i .. "x"
  return wrk.format("POST", "%(path)s", headers, body(q))
end
function response(status, headers, body)
  n = n + 1
  if status == 200 and headers["x-prism-cache"] == "hit" then hits = hits + 1 end
end
function done(summary, latency, requests)
  local h, m = 0, 0
  for _, t in ipairs(threads) do h = h + t:get("hits"); m = m + t:get("n") end
  io.write(string.format("RESULT %%d %%d %%d %%.3f %%.3f %%.3f %%.3f %%.6f %%d\\n",
    summary.requests, h, m, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.duration / 1e6,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


@dataclass(frozen=True, slots=True)
class Load:
    """What a hit workload measured: throughput, latency (ms), hits, the client's CPU."""

    rate: float
    p50: float
    p90: float
    p99: float
    max: float
    n: int
    hits: int
    client_cpu_s: float
    errors: int = 0
    server_cpu_s: float | None = None  # the proxy's processes, when measured (cpu_seconds)

    def line(self, label: str, concurrency: int) -> str:
        """One result line: ``label c=…: … req/s  p50 … (n=…)  hit rate …  client CPU …``."""
        return (f"{label:13s} c={concurrency}: {self.rate:7.0f} req/s  p50 {self.p50:7.2f} ms  "
                f"p90 {self.p90:7.2f}  p99 {self.p99:7.2f}  max {self.max:7.2f}  (n={self.n})  "
                f"hit rate {self.hits / max(1, self.n):.2f}  client CPU "
                f"{self.client_cpu_s / max(1, self.n) * 1e6:.0f} us/req"
                + (f"  proxy CPU {self.server_cpu_us:.0f} us/req" if self.server_cpu_us else "")
                + (f"  errors {self.errors}" if self.errors else ""))

    @property
    def server_cpu_us(self) -> float | None:
        """The proxy's CPU microseconds per request, when measured."""
        return None if self.server_cpu_s is None else self.server_cpu_s / max(1, self.n) * 1e6


def wrk_hits(port: int, base: str, fillers: Sequence[str], *, semantic: bool, seconds: float,
             concurrency: int, server_pid: int | None = None) -> Load:
    """Send chat requests for ``seconds`` with wrk (one thread, ``concurrency`` keep-alive
    connections) to 127.0.0.1:``port``: ``base`` verbatim each time, or (``semantic``) ``base``
    plus two ``fillers`` and a counter, distinct every request. With ``server_pid``, the CPU
    time of that process tree is measured too. Raises ``RuntimeError`` when wrk is not
    installed or prints no result."""
    if WRK is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    script = _WRK_SCRIPT % {"base": json.dumps(base), "semantic": "true" if semantic else "false",
                            "fillers": ", ".join(json.dumps(f) for f in fillers),
                            "path": CHAT_PATH}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = cpu_seconds(server_pid) if server_pid else 0.0
        out = subprocess.run([WRK, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", lua.name,
                              f"http://127.0.0.1:{port}{CHAT_PATH}"],
                             capture_output=True, text=True, timeout=seconds + 60, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = cpu_seconds(server_pid) - server_before if server_pid else None
    result = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("RESULT")]
    if not result:
        raise RuntimeError(f"wrk printed no result: {out.stdout} {out.stderr}")
    n, n_hit, _, p50, p90, p99, top, duration, errors = result[0]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Load(rate=int(n) / float(duration), p50=float(p50), p90=float(p90), p99=float(p99),
                max=float(top), n=int(n), hits=int(n_hit), client_cpu_s=cpu, errors=int(errors),
                server_cpu_s=server)


async def python_hits(ports: Sequence[int], bodies: list[dict[str, Any]],
                      concurrency: int, server_pid: int | None = None) -> Load:
    """:func:`hits`, summarised as a :class:`Load` with this process's CPU time spent (and
    that of the ``server_pid`` process tree, when given)."""
    cpu = time.process_time()
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    rate, lat, n_hit = await hits(ports, bodies, concurrency)
    server = cpu_seconds(server_pid) - server_before if server_pid else None
    return Load(rate=rate, p50=statistics.median(lat), p90=pct(lat, 0.9), p99=pct(lat, 0.99),
                max=max(lat), n=len(lat), hits=n_hit, client_cpu_s=time.process_time() - cpu,
                server_cpu_s=server)


#: the yardstick's query: 9 tokens with [CLS] and [SEP]
YARDSTICK_QUERY = "How do I reset my password?"


@dataclass(frozen=True, slots=True)
class Yardstick:
    """One plain single-query inference of the bundled model, timed in this run."""

    p50_ms: float
    p99_ms: float
    n: int

    @property
    def rate(self) -> float:
        """Its one-at-a-time rate: inferences per second at the median (1000 / p50)."""
        return 1000.0 / self.p50_ms

    def ratio(self, ms: float) -> str:
        """``ms`` as a multiple of the yardstick's median, e.g. ``"0.42x"``."""
        return f"{ms / self.p50_ms:.2f}x"

    def rate_ratio(self, per_second: float) -> str:
        """A throughput as a multiple of the yardstick's one-at-a-time rate."""
        return f"{per_second / self.rate:.2f}x"

    @classmethod
    def of(cls, times_ms: list[float]) -> Yardstick:
        """The yardstick summarised from timings of :func:`yardstick_run` in milliseconds."""
        return cls(p50_ms=statistics.median(times_ms), p99_ms=pct(times_ms, 0.99),
                   n=len(times_ms))

    def __str__(self) -> str:
        return (f"yardstick (int8 MiniLM, default ORT session, 1 thread, 9 tokens, run only): "
                f"p50 {self.p50_ms:.2f} ms  p99 {self.p99_ms:.2f} ms  "
                f"= {self.rate:.0f} inferences/s one at a time  (n={self.n})")


def yardstick_run() -> Callable[[], None]:
    """One yardstick inference as a callable, for benchmarks that interleave it with what
    they measure (so both see the same load); :meth:`Yardstick.of` summarises the timings.

    The session is built here from the pinned model file with onnxruntime's defaults except
    ``intra_op_num_threads=1``, so nothing the embedder tunes leaks into it.
    """
    import numpy as np
    import onnxruntime as ort

    from prismcache.embedders.minilm import bundled_tokenizer, installed_model_path

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(installed_model_path()), options,
                                   providers=["CPUExecutionProvider"])
    ids = np.array([bundled_tokenizer().encode(YARDSTICK_QUERY).ids], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}

    def run() -> None:
        session.run(None, feeds)

    return run


def yardstick(repeat: int = 300, warmup: int = 30) -> Yardstick:
    """Time ``repeat`` runs (after ``warmup``) of the yardstick in this process."""
    run = yardstick_run()
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    return Yardstick.of(times)
