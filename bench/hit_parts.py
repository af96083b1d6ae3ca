"""Where the proxy's CPU per semantic hit goes, by thread and by part (issue 13, fifth pass).

For each embedder, serve the proxy (``bench/proxy.py``'s config) in front of the fake
upstream, store one answer, warm up with exact hits, then send ``--concurrency`` clients of
semantic hits (a new paraphrase every request, wrk) for ``--seconds`` and print, per hit:

* the proxy's CPU (user and system), its event loop's (the main thread) and the worker
  threads', and the context switches, from ``/proc/<pid>/task``;
* the model's CPU and wall time per text and the batches it ran, from ``GET /admin/stats``
  (``BatchingEmbedder.stats()``) read before and after the window;
* with ``--py-spy DIR``, a raw py-spy profile of the window (``--threads --nonblocking``).

    .venv/bin/python bench/hit_parts.py --embedders minilm:dynamic hash:64 --seconds 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchkit import (
    ROOT,
    Conn,
    chat,
    free_port,
    serve_command,
    serving,
    upstream_command,
    wrk_hits,
)
from proxy import FILLERS, config_of

BASE = "how do i reset my password"
ADMIN = "bench-admin-token"


def threads(pid: int) -> dict[int, tuple[float, float, int]]:
    """Per thread of ``pid``: (user s, system s, context switches) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            switches = sum(int(line.split()[1]) for line in
                           (task / "status").read_text().splitlines()
                           if "ctxt_switches:" in line)
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick, switches)
    return out


def embedder_stats(port: int) -> dict[str, Any]:
    """The proxy's ``embedder`` block of ``GET /admin/stats``."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/admin/stats",
                                     headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["embedder"] or {}


def window(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The model's work between two reads of :func:`embedder_stats`."""
    texts = after["texts"] - before["texts"]
    batches = after["batches"] - before["batches"]
    if not texts:
        return "the model: no texts"
    cpu, wall = ((after[k] * after["texts"] - before[k] * before["texts"]) / texts
                 for k in ("cpu_ms_per_text", "ms_per_text"))
    sizes = {k: after["sizes"].get(k, 0) - before["sizes"].get(k, 0) for k in after["sizes"]}
    return (f"the model: {texts} texts in {batches} calls ({texts / max(1, batches):.2f} per "
            f"call; by size {sizes}), CPU {cpu:.3f} ms per text, wall {wall:.3f} ms")


def run(embedder: str, args: argparse.Namespace, upstream_port: int) -> None:
    """Serve with ``embedder``, measure one semantic-hit window, print its lines."""
    os.environ["PRISM_BENCH_ADMIN"] = ADMIN
    config = config_of(embedder, 16, {"admin_token_env": "PRISM_BENCH_ADMIN"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "bench.yaml")
        path.write_text(json.dumps(config))
        port = free_port()
        command = serve_command(path, port, f"http://127.0.0.1:{upstream_port}/v1")
        with serving(command, port, cwd=tmp, timeout=180) as proc:
            asyncio.run(_seed(port))
            time.sleep(0.5)
            # warm up on exact hits: a semantic warm-up would leave its paraphrases in the
            # cache's memo, and wrk's counter repeats them
            wrk_hits(port, BASE, FILLERS, semantic=False, seconds=3, concurrency=args.concurrency)
            model, before = embedder_stats(port), threads(proc.pid)
            spy = None
            if args.py_spy:
                out = Path(args.py_spy, f"{embedder.replace(':', '_')}.raw")
                spy = subprocess.Popen(
                    [str(ROOT / ".venv/bin/py-spy"), "record", "--pid", str(proc.pid), "-r", "200",
                     "-f", "raw", "--threads", "--nonblocking", "-d", str(int(args.seconds) - 1),
                     "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            load = wrk_hits(port, BASE, FILLERS, semantic=True, seconds=args.seconds,
                            concurrency=args.concurrency, server_pid=proc.pid)
            if spy is not None:
                spy.wait()
            after, model_after = threads(proc.pid), embedder_stats(port)
    n = max(1, load.n)
    delta = {tid: [a - b for a, b in zip(value, before.get(tid, (0.0, 0.0, 0)), strict=True)]
             for tid, value in after.items()}
    user, system = (sum(d[i] for d in delta.values()) / n * 1e6 for i in (0, 1))
    loop = sum(delta.get(proc.pid, [0.0, 0.0])[:2]) / n * 1e6
    switches = sum(d[2] for d in delta.values()) / n
    print(f"\n== {embedder}")
    print(load.line("semantic hits", args.concurrency))
    print(f"proxy CPU per hit: user {user:.0f} us + system {system:.0f} us; the event loop "
          f"{loop:.0f} us, the other threads {user + system - loop:.0f} us; "
          f"{switches:.1f} context switches")
    if model:
        print(window(model, model_after))


async def _seed(port: int) -> None:
    conn = await Conn(port).open()
    await conn.post(chat(BASE))
    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", nargs="+", default=["minilm:dynamic", "hash:64"])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--py-spy", metavar="DIR", help="write a raw py-spy profile here")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"prismcache semantic hits by part  {time.strftime('%Y-%m-%d %H:%M')}  "
          f"cpus {os.cpu_count()}  load average {load}")
    upstream_port = free_port()
    with serving(upstream_command(upstream_port, "--latency", "0.05"), upstream_port):
        for embedder in args.embedders:
            run(embedder, args, upstream_port)


if __name__ == "__main__":
    main()
