"""Fan-out benchmark: Ponder's backend vs a raw aiohttp client vs the openai SDK vs the limit.

For R requests against a stand-in server with C slots, the physical limit is
ceil(R / C) x (TTFT + L x per-token time). Each client runs R requests with at most C in
flight; the table prints each wall time as a ratio to that limit, all measured in one run.
The stand-in runs in its own process so that it has its own core.

    python benchmarks/fanout.py                 # R in {64, 1024, 4096}, C in {64, 256}
    python benchmarks/fanout.py --quick         # R in {64, 1024}, C = 256
    python benchmarks/fanout.py --json
    python benchmarks/fanout.py --quick --stress   # 0.3 s requests: CPU per request shows
    python benchmarks/fanout.py --quick --loop uvloop   # every client on uvloop

The default request is TTFT 0.1 s + 200 tokens x 5 ms = 1.1 s: a short answer decoded at
200 tokens/s per sequence, which is faster than vLLM decodes 256 concurrent sequences of a
7B model on one GPU (so the clients' overhead weighs more here than it would there).
``--stress`` uses 40 tokens (0.3 s per request), which makes each client's CPU per request
the main cost on a 2-core machine; the limit formula counts no CPU at all.

Every client runs on the same event loop (``--loop``, asyncio's by default) after the same
``gc.freeze()`` of the objects made at import, as Ponder's command line does.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path

import aiohttp
from _standin import standin_process

from ponder import Model, ModelRef, Settings

TTFT = 0.1
PER_TOKEN = 0.005
LENGTH = 200
STRESS_LENGTH = 40


def standin(
    slots: int, ttft: float = TTFT, per_token: float = PER_TOKEN, length: int = LENGTH
) -> AbstractContextManager[str]:
    """`ponder standin` in a subprocess on a free port; its base URL."""
    return standin_process(
        "--slots", str(slots), "--queue-limit", "100000", "--ttft-base", str(ttft),
        "--ttft-per-token", "0", "--per-token", str(per_token), "--output-tokens", str(length),
    )  # fmt: skip


def body(i: int) -> dict[str, object]:
    return {"model": "standin", "messages": [{"role": "user", "content": f"request {i}"}]}


async def run_raw_aiohttp(url: str, r: int, c: int) -> None:
    sem = asyncio.Semaphore(c)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> None:
            async with sem, session.post(url + "/chat/completions", json=body(i)) as resp:
                data = json.loads(await resp.read())
                assert data["choices"][0]["message"]["content"]

        await asyncio.gather(*(one(i) for i in range(r)))


async def run_openai_sdk(url: str, r: int, c: int) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="none")
    sem = asyncio.Semaphore(c)

    async def one(i: int) -> None:
        async with sem:
            resp = await client.chat.completions.create(
                model="standin", messages=[{"role": "user", "content": f"request {i}"}]
            )
            assert resp.choices[0].message.content

    try:
        await asyncio.gather(*(one(i) for i in range(r)))
    finally:
        await client.close()


async def run_ponder(url: str, r: int, c: int, *, cache: bool = True) -> None:
    # the default policy: a fresh persistent cache that every sample is written to
    path = Path(tempfile.mkdtemp()) / "cache.sqlite"
    settings = Settings.load(cache_path=path, cache=cache)
    ref = ModelRef(provider="vllm", name="standin", base_urls=(url,), max_concurrency=c)
    async with Model(ref, settings=settings) as model:

        async def one(i: int) -> None:
            completion = await model.generate(f"request {i}")
            assert completion.text

        await asyncio.gather(*(one(i) for i in range(r)))


async def run_ponder_nocache(url: str, r: int, c: int) -> None:
    await run_ponder(url, r, c, cache=False)


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[None]]] = {
    "raw_aiohttp": run_raw_aiohttp,
    "openai_sdk": run_openai_sdk,
    "ponder": run_ponder,
    "ponder_nocache": run_ponder_nocache,
}


LOOP: Callable[[], asyncio.AbstractEventLoop] | None = None  # None: asyncio's own


def timed(fn: Callable[[str, int, int], Awaitable[None]], url: str, r: int, c: int) -> float:
    async def main() -> None:
        await fn(url, r, c)

    t0 = time.perf_counter()
    with asyncio.Runner(loop_factory=LOOP) as runner:
        runner.run(main())
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--quick", action="store_true", help="R in {64, 1024}, C = 256")
    ap.add_argument("--ttft", type=float, default=TTFT, help="seconds to the first token")
    ap.add_argument("--per-token", type=float, default=PER_TOKEN, help="seconds per token")
    ap.add_argument("--length", type=int, default=None, help="tokens per answer")
    ap.add_argument("--stress", action="store_true", help=f"{STRESS_LENGTH}-token answers")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = ap.parse_args()
    if args.length is None:
        args.length = STRESS_LENGTH if args.stress else LENGTH
    global LOOP
    if args.loop == "uvloop":
        import uvloop

        LOOP = uvloop.new_event_loop
    gc.freeze()  # the same for every client: imports are not rescanned by each collection
    requests = [64, 1024] if args.quick else [64, 1024, 4096]
    slots = [256] if args.quick else [64, 256]
    rows = []
    for c in slots:
        with standin(c, args.ttft, args.per_token, args.length) as url:
            timed(run_raw_aiohttp, url, 32, c)  # warm up the server process
            for r in requests:
                limit = math.ceil(r / c) * (args.ttft + args.length * args.per_token)
                row: dict[str, float | int] = {"R": r, "C": c, "limit_s": round(limit, 3)}
                # best of two runs (one when a run is long), so that one noisy run on a
                # shared machine does not decide
                reps = 2 if limit <= 20 else 1
                for name, fn in CLIENTS.items():
                    wall = min(timed(fn, url, r, c) for _ in range(reps))
                    row[f"{name}_s"] = round(wall, 3)
                    row[name] = round(wall / limit, 3)
                row["ponder_vs_raw"] = round(row["ponder_s"] / row["raw_aiohttp_s"], 3)
                rows.append(row)
                if not args.json:
                    print(
                        f"R={r:5d} C={c:4d} limit={limit:6.2f}s  "
                        f"raw aiohttp {row['raw_aiohttp']:.3f}x  "
                        f"openai SDK {row['openai_sdk']:.3f}x  "
                        f"ponder {row['ponder']:.3f}x  "
                        f"ponder without cache {row['ponder_nocache']:.3f}x  "
                        f"(ponder/raw {row['ponder_vs_raw']:.3f})",
                        flush=True,
                    )
    if args.json:
        print(
            json.dumps(
                {
                    "ttft_s": args.ttft,
                    "per_token_s": args.per_token,
                    "length": args.length,
                    "loop": args.loop,
                    "cpus": os.cpu_count(),
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
