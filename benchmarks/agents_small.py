"""Do agents finish, and do typed outputs validate, on small local models?

Two measurements on the real offline models (CPU, llama.cpp), printed as tables and saved
as JSON:

* **Agents** (``local:qwen0.5b``, or ``--model``): 20 prompts, each offered two tools: the
  built-in calculator and ``convert_time`` from the third-party MCP server
  ``mcp-server-time`` (PyPI; started over stdio). 10 prompts are arithmetic, 10 convert a
  time between zones (the expected answer computed with ``zoneinfo`` for today's date).
  Per run (at most 4 turns of at most 192 tokens): whether it made a tool call, whether
  every call was valid (no error result), whether it ended with a clean final answer
  (prose, no call text left in it; ``stopped`` says whether the model chose to answer or
  was asked to after its last turn), and whether that answer is right.
* **Typed outputs**: 10 prompts answered as a pydantic model with a bounded integer
  (``Field(ge=0, le=100)``) and an enum, through ``generate(output=..., repair=1)``, on
  both embedded models and on llama-cpp-python's own server (SmolLM2, started on a free
  port): valid first replies, and valid after the repair turn.

"Before and after" a change: run the script from each commit's tree (``--label``), e.g.
``git worktree add /tmp/before <rev>`` then ``PYTHONPATH=/tmp/before python
benchmarks/agents_small.py --label before``; ``docs/agents.md`` reports both.

    python benchmarks/agents_small.py --label after            # ~10 min on 2 cores
    python benchmarks/agents_small.py --prompts 2 --typed 2 --no-server   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from ponder import GenerateParams, Model
from ponder.agents import run_agent
from ponder.tools import MCPServer, calculator_tool

HERE = Path(__file__).parent
ARITHMETIC = [
    ("What is 347 * 29 - 158?", 347 * 29 - 158),
    ("What is 1234 + 5678 * 3?", 1234 + 5678 * 3),
    ("What is (45 + 55) * 12 - 7?", (45 + 55) * 12 - 7),
    ("What is 9876 - 4321 + 88 * 4?", 9876 - 4321 + 88 * 4),
    ("What is 612 * 17?", 612 * 17),
    ("What is 25 * 25 * 4 - 99?", 25 * 25 * 4 - 99),
    ("What is 7777 - 3888 - 1111?", 7777 - 3888 - 1111),
    ("What is 123 * 45 + 67?", 123 * 45 + 67),
    ("What is (300 - 17) * 6?", (300 - 17) * 6),
    ("What is 58 * 58 + 42?", 58 * 58 + 42),
]
ZONES = [
    ("America/New_York", "Asia/Tokyo", "09:30"),
    ("Europe/London", "America/Los_Angeles", "14:00"),
    ("Asia/Kolkata", "Europe/Berlin", "18:15"),
    ("Australia/Sydney", "UTC", "08:00"),
    ("Europe/Paris", "America/Chicago", "11:45"),
    ("America/Sao_Paulo", "Asia/Singapore", "22:10"),
    ("UTC", "Asia/Dubai", "06:30"),
    ("Asia/Tokyo", "Europe/Madrid", "16:20"),
    ("America/Denver", "Africa/Cairo", "07:05"),
    ("Europe/Moscow", "America/New_York", "12:00"),
]
SYSTEM = (
    "You can call tools. Use the calculator for arithmetic and convert_time to convert "
    "times between time zones. When you are done, answer with the answer itself inside "
    "\\boxed{}."
)


def converted(source: str, target: str, hhmm: str) -> str:
    today = dt.datetime.now(ZoneInfo(source)).date()
    h, m = (int(x) for x in hhmm.split(":"))
    t = dt.datetime(today.year, today.month, today.day, h, m, tzinfo=ZoneInfo(source))
    return t.astimezone(ZoneInfo(target)).strftime("%H:%M")


def prompts(n: int) -> list[tuple[str, str]]:
    """(prompt, expected answer) pairs: arithmetic and time conversions, interleaved."""
    out: list[tuple[str, str]] = []
    for (q, a), (src, dst, hhmm) in zip(ARITHMETIC, ZONES, strict=True):
        out.append((q, str(a)))
        out.append((f"When it is {hhmm} in {src}, what time is it in {dst}? Answer as HH:MM.",
                    converted(src, dst, hhmm)))  # fmt: skip
    return out[:n]


_CALL_TEXT = re.compile(r'"name"\s*:|"arguments"\s*:|<tool_call>')


def right(text: str, expected: str) -> bool:
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    said = boxed[-1] if boxed else text
    if ":" in expected:
        return expected in said or expected.lstrip("0") in said
    return expected in re.findall(r"-?\d+", said.replace(",", ""))


async def agents(model_ref: str, n: int) -> dict[str, Any]:
    time_server = MCPServer(command=[sys.executable, "-m", "mcp_server_time"], start_timeout=60)
    tools = [calculator_tool(), time_server]
    async with Model(model_ref, cache=False) as model:

        async def one(prompt: str, expected: str) -> dict[str, Any]:
            t = time.perf_counter()
            run = await run_agent(model, prompt, tools, system=SYSTEM, max_steps=4,
                                  params=GenerateParams(max_tokens=192))  # fmt: skip
            uses = [u for s in run.steps for u in s.tool_uses]
            # a final answer in prose (forced after max_steps or not), no call text
            clean = bool(run.text.strip()) and not _CALL_TEXT.search(run.text)
            row = {
                "prompt": prompt, "expected": expected, "answer": run.text[-300:],
                "stopped": run.stopped, "calls": len(uses),
                "valid_calls": bool(uses) and not any(u.error for u in uses),
                "clean_final": clean, "right": clean and right(run.text, expected),
                "seconds": round(time.perf_counter() - t, 1),
            }  # fmt: skip
            print(f"  {run.stopped:9} calls={len(uses)} valid={row['valid_calls']!s:5} "
                  f"clean={clean!s:5} right={row['right']!s:5} {prompt[:50]}",
                  flush=True)  # fmt: skip
            return row

        try:
            # all at once: the embedded engine decodes concurrent runs as one batch
            rows = list(await asyncio.gather(*(one(p, e) for p, e in prompts(n))))
        finally:
            await time_server.aclose()
    k = len(rows)
    return {
        "model": model_ref,
        "prompts": k,
        "answered": sum(r["stopped"] == "answered" for r in rows),
        "made_a_call": sum(r["calls"] > 0 for r in rows),
        "valid_calls": sum(r["valid_calls"] for r in rows),
        "clean_final": sum(r["clean_final"] for r in rows),
        "right": sum(r["right"] for r in rows),
        "rows": rows,
    }


class Colour(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Rating(BaseModel):
    score: int = Field(ge=0, le=100, description="0 to 100")
    colour: Colour
    reason: str


TYPED = [
    "Rate how sunny a summer day in Madrid is, from 0 to 100, with a colour.",
    "Rate how hard calculus is for a child, 0 to 100, and pick a colour for it.",
    "Score the taste of fresh bread from 0 to 100 and give it a colour.",
    "How loud is a rock concert, 0 to 100? Pick a colour.",
    "Rate the speed of a snail from 0 to 100, with a colour.",
    "Give the ocean a calmness score from 0 to 100 and a colour.",
    "Rate how green a forest is, 0-100, and choose the colour.",
    "Score how cold the Arctic is, from 0 to 100, with a colour.",
    "How useful is a hammer, 0 to 100? And a colour for it.",
    "Rate a sunset's beauty from 0 to 100 and name its colour.",
]


async def typed(model_ref: str, n: int) -> dict[str, Any]:
    async with Model(model_ref, cache=False) as model:

        async def one(i: int, prompt: str) -> tuple[bool, bool]:
            c0 = await model.generate(prompt, output=Rating, repair=0, seed=i, max_tokens=160)
            c1 = await model.generate(prompt, output=Rating, repair=1, seed=i, max_tokens=160)
            ok0 = isinstance(c0.choices[0].parsed, Rating)
            ok1 = isinstance(c1.choices[0].parsed, Rating)
            print(f"  {model_ref}: first={ok0!s:5} with repair={ok1!s:5} "
                  f"{c1.choices[0].text[:70]!r}", flush=True)  # fmt: skip
            return ok0, ok1

        oks = await asyncio.gather(*(one(i, p) for i, p in enumerate(TYPED[:n])))
    first = sum(a for a, _ in oks)
    repaired = sum(b for _, b in oks)
    return {"model": model_ref, "prompts": n, "valid_first": first, "valid_after_repair": repaired}


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's own OpenAI-compatible server with SmolLM2 on a free port."""
    from ponder.backends._local import resolve_model_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model_path("smollm2")),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
           "--seed", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/models", timeout=1):
                return proc, base
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("llama-cpp-python's server did not start")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="local:qwen0.5b", help="the agents' model")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--typed", type=int, default=10, help="typed-output prompts per backend")
    ap.add_argument("--no-server", action="store_true", help="skip llama-cpp-python's server")
    ap.add_argument("--label", default="now", help="e.g. before / after")
    ap.add_argument("--out", default=None, help="default: results/agents_small_LABEL.json")
    args = ap.parse_args()
    result: dict[str, Any] = {"label": args.label}
    print(f"agents on {args.model}: {args.prompts} prompts (calculator + mcp-server-time)")
    result["agents"] = await agents(args.model, args.prompts)
    result["typed"] = []
    for ref in ("local:smollm2", "local:qwen0.5b"):
        result["typed"].append(await typed(ref, args.typed))
    if not args.no_server:
        proc, base = start_server()
        try:
            result["typed"].append(await typed(f"llama_cpp_python:smollm2@{base}", args.typed))
        finally:
            proc.terminate()
            proc.wait(10)
    a = result["agents"]
    print(f"\n[{args.label}] agents on {a['model']}, {a['prompts']} prompts: made a call "
          f"{a['made_a_call']}, all calls valid {a['valid_calls']}, chose to answer "
          f"{a['answered']}, clean final answer "
          f"{a['clean_final']}, right {a['right']}")  # fmt: skip
    for t in result["typed"]:
        print(
            f"[{args.label}] typed Rating on {t['model']}: valid first {t['valid_first']}"
            f"/{t['prompts']}, after one repair {t['valid_after_repair']}/{t['prompts']}"
        )
    out = Path(args.out or HERE / "results" / f"agents_small_{args.label}.json")
    await asyncio.to_thread(save, out, result)


def save(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
