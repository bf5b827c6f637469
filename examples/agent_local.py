"""An agent on the embedded Qwen2.5-Coder-0.5B model (no server, no GPU): it calls the
calculator in its own tool-call format, reads the result and answers.

Needs the model fixture once: ponder models add qwen0.5b (./dev does it).
Run: python examples/agent_local.py
"""

from __future__ import annotations

import asyncio

from ponder import GenerateParams, Model
from ponder.agents import extract_answer, run_agent
from ponder.tools import calculator_tool

QUESTIONS = ["What is 69 * 12 + 18?"]  # add more: each takes ~25 s on 2 CPU cores


async def main() -> None:
    async with Model("local:qwen0.5b", cache=False) as m:
        for q in QUESTIONS:
            run = await run_agent(
                m,
                q,
                [calculator_tool()],
                max_steps=3,
                params=GenerateParams(temperature=0, max_tokens=160),
            )
            calls = [
                f"{u.name}({u.arguments}) -> {u.result}" for s in run.steps for u in s.tool_uses
            ]
            print(q, "|", "; ".join(calls) or "no tool call", "| answer:", extract_answer(run.text))


asyncio.run(main())
