"""An agent with tools on the stand-in server: a Python function as a tool, the built-in
calculator, a typed answer, and four agent runs voting in a workflow.

Run: python examples/agent_standin.py
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from ponder import Model
from ponder.agents import run_agent
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank
from ponder.tools import calculator_tool, tool
from ponder.workflows import Workflow, WorkflowSpec


@tool
def convert(value: float, unit: str) -> float:
    """Convert a length to metres.

    Args:
        value: the number
        unit: km, cm or mm
    """
    return value * {"km": 1000.0, "cm": 0.01, "mm": 0.001}[unit]


class Answer(BaseModel):
    value: int
    unit: str


async def main() -> None:
    bank = ProblemBank(0)
    problem = bank.problem(bank.ids("multistep", 1)[0])
    async with (
        StandinServer(StandinConfig(time_scale=0.01)) as server,
        Model(f"vllm:weak@{server.base_url}", cache=False) as m,
    ):
        # one agent run: the model calls the calculator, reads the result, answers
        run = await run_agent(m, problem.question, [calculator_tool(), convert])
        print("question:", problem.question)
        for i, step in enumerate(run.steps, 1):
            for use in step.tool_uses:
                print(f"  turn {i}: {use.name}({use.arguments}) -> {use.result}")
            if not step.tool_uses:
                print(f"  turn {i}: {step.text.splitlines()[-1]}")
        print("stopped:", run.stopped, "| spend:", run.spend)
        print("tool schema the model saw:", convert.spec.parameters)

        # four agent runs sample in parallel, then vote (the same in YAML)
        spec = WorkflowSpec.model_validate(
            {
                "name": "agents-vote",
                "models": {"m": f"vllm:weak@{server.base_url}"},
                "layers": [{"generate": {"n": 4, "tools": ["calculator"]}}, "vote"],
            }
        )
        result = await Workflow(spec).arun(problem.question)
        print("vote of 4 agents:", result.output.final, "| expected:", problem.answer)

    # typed output: a validated object (here from a fake model, no server needed)
    from ponder.testing import FakeModel

    fake = FakeModel(['{"value": 3000, "unit": "m"}'])
    print("typed:", await fake.parse("3 km in metres, as JSON", Answer))


asyncio.run(main())
