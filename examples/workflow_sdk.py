"""A workflow built in Python, streamed with events, on an embedded stand-in server.

Run: python examples/workflow_sdk.py
"""

from __future__ import annotations

import asyncio

from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank
from ponder.workflows import GraphBuilder, Pipeline, step


async def main() -> None:
    async with StandinServer(StandinConfig(time_scale=0.01)) as server:
        url = server.base_url
        stack = (
            Pipeline(models={"strong": f"vllm:strong@{url}", "weak": f"vllm:weak@{url}"})
            .layer(step("generate", models=["strong", "weak"], n=5))
            .then("critique", model="strong")
            .then("rank", model="strong", top_k=3)
            .then("fuse", model="strong")
            .build()
        )
        async for event in stack.astream("Problem 0: What is 53 * 7 + 57?"):
            if event.kind == "node_finished":
                print(f"{event.node}: {event.data['candidates']} candidates, "
                      f"{event.data['tokens']} tokens")  # fmt: skip
        result = await stack.arun("Problem 0: What is 53 * 7 + 57?")
        print("stack answer:", result.output.candidates[0].answer)

        loop = (
            GraphBuilder(models={"m": f"vllm:weak@{url}"})
            .node("draft", "generate", model="m", n=4)
            .node("check", "verify", model="m")
            .node("pick", "best_of_n", score="verifier")
            .edge("draft", "check")
            .branch("check", "verified_share < 0.5", "draft", "pick", max_iterations=2)
            .build()
        )
        question = ProblemBank(0).problem(4)
        looped = await loop.arun(question.question)
        print(
            f"loop answer: {looped.output.final} (truth {question.answer}), visits {looped.visits}"
        )


if __name__ == "__main__":
    asyncio.run(main())
