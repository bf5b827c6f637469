"""Many queries of an Archon stack at once: batch wall time against its bound.

The stack: 8 generators of distinct models -> rank (keep 5) -> critique -> verify each
-> fuse, 16 model calls per query. `ponder standin` runs as its own process with 64
slots and 0.2 s calls (TTFT 0.2 s, no per-token time), serving every model name. The
client runs Q queries concurrently through one engine; every model has the stand-in's
64 slots as its endpoint limit, so requests wait on the client, where the scheduling
policy orders them.

    bound(Q) = max(critical path, slot-calls / slots) = max(5 x 0.2 s, 16 Q x 0.2 s / 64)

For each Q in {1, 8, 64, 256}, with the response cache off and on (a fresh, cold cache
file per run: the cache's write path is measured, not its hits), and for each scheduling
policy (FIFO and least attained service), it prints wall / bound, client CPU per query
(process time of this process, which runs only the client), and p50 / p99 per-query
latency. Last, the floor: the CPU per request of a bare aiohttp client (no framework)
sending 16 x 64 chat requests with 64 in flight to the same stand-in, on the same loop.
Ponder's CPU per request minus the floor is what Ponder itself costs.

    python benchmarks/batch.py            # the full table
    python benchmarks/batch.py --quick    # Q in {1, 64}
    python benchmarks/batch.py --json     # also write benchmarks/results/batch.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from _standin import standin_process

from ponder import Settings
from ponder.engine import Engine
from ponder.testing.oracle import OracleConfig, ProblemBank
from ponder.workflows import Workflow, WorkflowSpec

SLOTS = 64
CALL = 0.2
GENERATORS = 8
DEPTH = 5  # generate, rank, critique, verify, fuse
CALLS = GENERATORS + 1 + 1 + 5 + 1
MODELS = [f"g{i}" for i in range(GENERATORS)] + ["judge"]


def standin(
    config: dict[str, Any] | None = None, *, ttft: float = CALL, per_token: float = 0.0
) -> AbstractContextManager[str]:
    """`ponder standin` in a subprocess (its CPU is not the client's); by default 64
    slots, 0.2 s calls, every model name of the stack."""
    config = config or {"models": MODELS, "slots": SLOTS, "queue_limit": 100000}
    return standin_process(
        "--ttft-base", str(ttft), "--ttft-per-token", "0", "--per-token", str(per_token),
        "--config", json.dumps(config),
    )  # fmt: skip


def stack(url: str) -> WorkflowSpec:
    models: dict[str, Any] = {m: f"vllm:{m}@{url}" for m in MODELS}
    return WorkflowSpec.model_validate(
        {
            "name": "archon-batch",
            "models": models,
            "concurrency": SLOTS,
            "layers": [
                [{"generate": {"model": f"g{i}", "n": 1}} for i in range(GENERATORS)],
                {"rank": {"model": "judge", "top_k": 5}},
                {"critique": {"model": "judge"}},
                {"verify": {"model": "judge"}},
                {"fuse": {"model": "judge"}},
            ],
        }
    )


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(
    url: str, q: int, policy: str, cache: bool, questions: list[str], warm: list[str]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(
            cache=cache, cache_path=Path(tmp) / "c.sqlite", schedule=policy, max_retries=2
        )
        async with Engine(settings) as engine:
            wf = Workflow(stack(url), engine=engine)
            await wf.arun(warm[0])  # build the models, sessions and graph once
            gc.collect()
            latencies: list[float] = []

            async def one(text: str) -> None:
                t = time.perf_counter()
                r = await wf.arun(text)
                if r.failures:
                    raise RuntimeError(f"run failed: {r.failures}")
                latencies.append(time.perf_counter() - t)

            cpu0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(one(x) for x in questions[:q]))
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
    bound = max(DEPTH * CALL, CALLS * q * CALL / SLOTS)
    return {
        "Q": q,
        "policy": policy,
        "cache": cache,
        "wall": wall,
        "bound": bound,
        "ratio": wall / bound,
        "cpu_ms_per_query": 1000 * cpu / q,
        "cpu_ms_per_request": 1000 * cpu / (q * CALLS),
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
    }


async def raw_floor(url: str, texts: list[str], requests: int = CALLS * 64) -> float:
    """CPU ms per request of a bare aiohttp client: ``requests`` chat completions with
    ``SLOTS`` in flight, each body encoded and each answer decoded, nothing else."""
    sem = asyncio.Semaphore(SLOTS)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            message = {"role": "user", "content": texts[i % len(texts)]}
            body = orjson.dumps({"model": MODELS[i % len(MODELS)], "messages": [message]})
            headers = {"Content-Type": "application/json"}
            async with (
                sem,
                session.post(f"{url}/chat/completions", data=body, headers=headers) as r,
            ):
                assert orjson.loads(await r.read())["choices"][0]["message"]["content"]

        await asyncio.gather(*(one(i) for i in range(SLOTS)))  # connections open
        gc.collect()
        cpu0 = time.process_time()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return 1000 * (time.process_time() - cpu0) / requests


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="Q in {1, 64} only")
    ap.add_argument("--queries", type=int, nargs="*", help="override the Q values")
    ap.add_argument("--policies", nargs="*", default=["fifo", "las", "ncf"])
    ap.add_argument("--json", action="store_true", help="write benchmarks/results/batch.json")
    args = ap.parse_args()
    qs = args.queries or ([1, 64] if args.quick else [1, 8, 64, 256])
    bank = ProblemBank(OracleConfig().bank_seed, OracleConfig().distractors)
    ids = bank.ids("arithmetic", max(qs) * 2 * len(args.policies) * 2 + 8)
    texts = [bank.problem(i).question for i in ids]
    rows = []
    with standin() as url:
        k = 0
        for cache in (False, True):
            for policy in args.policies:
                for q in qs:
                    questions = texts[k : k + q]  # never the same question twice
                    k += q
                    warm = texts[-1 - k % 8 :]
                    r = await measure(url, q, policy, cache, questions, warm)
                    rows.append(r)
                    print(
                        f"Q={q:4d} cache={'on ' if cache else 'off'} {policy:4s} "
                        f"wall {r['wall']:6.2f}s bound {r['bound']:6.2f}s "
                        f"ratio {r['ratio']:.3f}  cpu {r['cpu_ms_per_query']:.2f} ms/query "
                        f"({r['cpu_ms_per_request']:.3f} ms/request)  "
                        f"p50 {r['p50']:.2f}s p99 {r['p99']:.2f}s",
                        flush=True,
                    )
        floor = min([await raw_floor(url, texts) for _ in range(2)])
        best = min(r["cpu_ms_per_request"] for r in rows if r["Q"] == max(qs) and not r["cache"])
        print(
            f"floor: a bare aiohttp client {floor:.3f} ms/request; Ponder's best at "
            f"Q={max(qs)} without cache {best:.3f} ms/request ({best / floor:.2f}x the "
            f"floor; Ponder's own {best - floor:.3f} ms/request)",
            flush=True,
        )
    if args.json:
        out = Path(__file__).parent / "results" / "batch.json"
        out.write_text(
            json.dumps({"rows": rows, "floor_raw_aiohttp_ms_per_request": floor}, indent=1)
        )
        print(f"wrote {out}")


if __name__ == "__main__":
    from ponder._internal import loop

    loop.run(main())
