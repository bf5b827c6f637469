"""Load on ``ponder serve``: N concurrent chat clients, latency percentiles, and the
server's overhead against running the same workflow directly.

A stand-in server (its own process, simulated latency) answers the model calls; ``ponder
serve`` runs as its own process with one workflow (sample n=4, vote) pointing at it. The
same requests then run directly through ``Workflow.arun`` in this process at the same
concurrency. The response cache is off in both. The server's CPU per request beyond the
workflow's own is the server process's CPU per request minus this process's CPU per
request on the direct path (the workflow plus a load driver, so the figure is, if
anything, low for the server).

    python benchmarks/serve_load.py                  # 64 clients, 512 requests
    python benchmarks/serve_load.py --clients 256 --requests 2048 --stream
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from _standin import serve_process
from batch import standin as standin_process

from ponder import Settings
from ponder.testing.oracle import ProblemBank
from ponder.workflows import load_workflow

WORKFLOW = """name: bench
models:
  m: vllm:m@{url}
layers:
  - generate: {{model: m, n: 4}}
  - vote: {{}}
"""


async def drive(
    n: int, clients: int, one: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            t = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--stream", action="store_true", help="stream the answers (SSE)")
    args = ap.parse_args()
    bank = ProblemBank()
    questions = [bank.problem(i).question for i in bank.ids("arithmetic", args.requests)]
    config = {"slots": 256, "queue_limit": 100000, "models": ["m"]}
    with (
        standin_process(config, ttft=0.05, per_token=0.002) as standin_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        wf_dir = Path(tmp) / "wf"
        wf_dir.mkdir()
        (wf_dir / "bench.yaml").write_text(WORKFLOW.format(url=standin_url))
        rpm = {"PONDER_SERVE_REQUESTS_PER_MINUTE": "1000000"}
        async with serve_process(wf_dir, **rpm) as (base, pid):
            conn = aiohttp.TCPConnector(limit=args.clients + 8)
            async with aiohttp.ClientSession(base, connector=conn) as c:

                async def via_server(i: int) -> None:
                    body = {
                        "model": "bench",
                        "stream": args.stream,
                        "messages": [{"role": "user", "content": questions[i]}],
                    }
                    async with c.post("/v1/chat/completions", json=body) as r:
                        r.raise_for_status()
                        await r.read()

                await drive(min(32, args.requests), args.clients, via_server)  # warm up
                cpu0 = cpu_seconds(pid)
                served, served_wall = await drive(args.requests, args.clients, via_server)
                server_cpu = (cpu_seconds(pid) - cpu0) / args.requests
        wf = load_workflow(wf_dir / "bench.yaml", settings=Settings.load(cache=False))

        async def direct(i: int) -> None:
            await wf.arun(questions[i])

        await drive(min(32, args.requests), args.clients, direct)
        cpu0 = time.process_time()
        direct_lat, direct_wall = await drive(args.requests, args.clients, direct)
        direct_cpu = (time.process_time() - cpu0) / args.requests
    mode = "streaming" if args.stream else "non-streaming"
    print(
        f"{args.requests} {mode} requests, {args.clients} concurrent clients, workflow n=4 + vote"
    )
    print(f"{'path':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for name, lat, wall in (
        ("ponder serve (HTTP)", served, served_wall),
        ("Workflow.arun direct", direct_lat, direct_wall),
    ):
        print(
            f"{name:<22}{pct(lat, 0.5):>9.1f}{pct(lat, 0.9):>9.1f}{pct(lat, 0.99):>9.1f}"
            f"{len(lat) / wall:>9.1f}"
        )
    over = statistics.median(served) - statistics.median(direct_lat)
    print(
        f"server overhead: +{over * 1000:.1f} ms at the median "
        f"({statistics.median(served) / statistics.median(direct_lat):.2f}x), "
        f"throughput {(len(direct_lat) / direct_wall) / (len(served) / served_wall):.2f}x lower"
    )
    print(
        f"CPU per request: server process {server_cpu * 1000:.2f} ms, the workflow run "
        f"directly {direct_cpu * 1000:.2f} ms; the server's own: "
        f"{(server_cpu - direct_cpu) * 1000:.2f} ms (goal <= 1 ms)"
    )


if __name__ == "__main__":
    from ponder._internal import loop

    loop.run(main())
