"""Time to the first answer token through ``ponder serve``, with live answers.

A stand-in (its own process: a fixed time to first token, then a fixed time per token)
serves a workflow of two steps, ``generate n=4`` then a one-sample ``fuse``; ``ponder
serve`` (its own process, cache off) streams it. For each question the client records
when the ``fuse`` node started (its event in the stream: the earlier steps' time) and
when the first content delta arrived. The bound is the earlier steps' time plus the
model's own time to first token, measured on the same stand-in with a direct streamed
request. Printed: the median and worst ratio of first token to that bound (goal <= 1.1),
and, for comparison, the ratio of the whole run's time, which is when the first token
came before live answers.

    python benchmarks/live_answer.py [--questions 10] [--ttft 0.3] [--per-token 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from _standin import serve_process
from batch import standin as standin_process

from ponder.testing.oracle import ProblemBank

WORKFLOW = """name: live
models:
  m: vllm:m@{url}
layers:
  - generate: {{model: m, n: 4}}
  - fuse: {{model: m, n: 1}}
"""


async def direct_ttft(session: aiohttp.ClientSession, url: str, question: str) -> float:
    """The stand-in's own time to first token for one streamed request."""
    body = {"model": "m", "stream": True, "max_tokens": 64,
            "messages": [{"role": "user", "content": question}]}  # fmt: skip
    t = time.perf_counter()
    async with session.post(f"{url}/chat/completions", json=body) as r:
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                data = json.loads(line[6:])
                if any(c.get("delta", {}).get("content") for c in data.get("choices", [])):
                    return time.perf_counter() - t
    raise RuntimeError("no content from the stand-in")


async def one(session: aiohttp.ClientSession, base: str, question: str) -> dict[str, float]:
    body = {"model": "live", "stream": True,
            "messages": [{"role": "user", "content": question}]}  # fmt: skip
    t = time.perf_counter()
    fuse_started = first = -1.0
    async with session.post(f"{base}/v1/chat/completions", json=body) as r:
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            event = data.get("ponder", {}).get("event")
            now = time.perf_counter() - t
            if event and event["kind"] == "node_started" and event["node"] == "layer2":
                fuse_started = now
            if first < 0 and any(c["delta"].get("content") for c in data.get("choices", [])):
                first = now
    return {"fuse_started": fuse_started, "first": first, "end": time.perf_counter() - t}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--ttft", type=float, default=0.3)
    ap.add_argument("--per-token", type=float, default=0.02)
    args = ap.parse_args()
    bank = ProblemBank()
    questions = [bank.problem(i).question for i in bank.ids("arithmetic", args.questions)]
    config = {"slots": 64, "queue_limit": 100000, "models": ["m"]}
    with (
        standin_process(config, ttft=args.ttft, per_token=args.per_token) as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        wf_dir = Path(tmp) / "wf"
        wf_dir.mkdir()
        (wf_dir / "live.yaml").write_text(WORKFLOW.format(url=url))
        async with serve_process(wf_dir) as (base, _pid), aiohttp.ClientSession() as c:
            model_ttft = min([await direct_ttft(c, url, q) for q in questions[:5]])
            runs = [await one(c, base, q) for q in questions]  # one at a time
    ratios = [r["first"] / (r["fuse_started"] + model_ttft) for r in runs]
    before = [r["end"] / (r["fuse_started"] + model_ttft) for r in runs]
    print(
        f"{len(runs)} questions; model TTFT {model_ttft * 1000:.0f} ms (direct); earlier "
        f"steps {statistics.median(r['fuse_started'] for r in runs) * 1000:.0f} ms (median)\n"
        f"first answer token / (earlier steps + model TTFT): median "
        f"{statistics.median(ratios):.3f}, worst {max(ratios):.3f} (goal <= 1.1)\n"
        f"the whole run (when the first token came before live answers) / the same bound: "
        f"median {statistics.median(before):.3f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
