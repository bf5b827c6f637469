"""``ponder serve`` with the official openai client: a workflow becomes a model.

1. a plain request, then a stream with the run's events;
2. the client's own tool loop: the workflow's samples vote on a tool call, the client
   runs it and sends the result, the workflow answers;
3. ``parse()`` with a pydantic model: the answer comes back validated;
4. the ``openai-agents`` framework (when installed), its model pointed at the server.

Runs offline: a stand-in model server and the Ponder server start in this process on
loopback ports (in production: ``ponder serve --workflows DIR``).

Run: python examples/serve_openai_client.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
from pydantic import BaseModel

from ponder.apps import PonderServer, ServeSettings
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank
from ponder.tools import calculate, calculator_tool
from ponder.workflows import Workflow, WorkflowSpec

# the client's tool: Ponder's own calculator, offered in OpenAI's shape and run locally
SPEC = calculator_tool().spec
CALCULATOR: Any = {"type": "function", "function": SPEC.model_dump()}


class Solution(BaseModel):
    answer: int
    explanation: str


async def main() -> None:
    async with StandinServer(StandinConfig(time_scale=0)) as standin:
        spec = WorkflowSpec.model_validate(
            {
                "name": "vote5",
                "models": {"m": f"vllm:m@{standin.base_url}"},
                "layers": [{"generate": {"n": 5}}, {"vote": {}}],
            }
        )
        server = PonderServer({"vote5": Workflow(spec)}, ServeSettings(api_keys=["sk-local"]))
        async with server.running() as url:
            await ask(f"{url}/v1")
            await with_tools(f"{url}/v1")


async def ask(base: str) -> None:
    q = ProblemBank().problem(0).question
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-local") as client:
        r = await client.chat.completions.create(
            model="vote5", messages=[{"role": "user", "content": q}]
        )
        print(q)
        print("answer:", r.choices[0].message.content)
        print("usage:", r.usage)
        stream = await client.chat.completions.create(
            model="vote5", messages=[{"role": "user", "content": q}], stream=True
        )
        async for chunk in stream:
            event = (chunk.model_extra or {}).get("ponder", {}).get("event")
            if event and event["kind"] == "node_finished":
                print(f"  {event['node']}: {event['data']['candidates']} candidates")


async def with_tools(base: str) -> None:
    """The client's own tools (its tool loop), parse(), and an agent framework."""
    q = ProblemBank().problem(0).question
    print(q)
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-local") as client:
        # 1. the client's tool loop
        messages: list[Any] = [{"role": "user", "content": q}]
        while True:
            r = await client.chat.completions.create(
                model="vote5", messages=messages, tools=[CALCULATOR]
            )
            message = r.choices[0].message
            if not message.tool_calls:
                break
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                assert call.type == "function"
                expression = json.loads(call.function.arguments)["expression"]
                result = calculate(expression)
                print(f"  tool call: calculator({expression!r}) -> {result}")
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        print("tool loop answer:", message.content)
        # 2. a typed answer
        done = await client.chat.completions.parse(
            model="vote5", messages=[{"role": "user", "content": q}], response_format=Solution
        )
        print("parse():", done.choices[0].message.parsed)
        # 3. an agent framework
        await with_openai_agents(client, q)


async def with_openai_agents(client: openai.AsyncOpenAI, q: str) -> None:
    try:
        import agents
    except ImportError:
        print("openai-agents: not installed (pip install openai-agents)")
        return
    agents.set_tracing_disabled(True)  # its default exports traces to OpenAI

    @agents.function_tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        return calculate(expression)

    agent = agents.Agent(
        name="solver",
        instructions="Use the calculator, then give the answer as \\boxed{N}.",
        tools=[calculator],
        model=agents.OpenAIChatCompletionsModel(model="vote5", openai_client=client),
    )
    result = await agents.Runner.run(agent, q, max_turns=4)
    print("openai-agents:", result.final_output)


if __name__ == "__main__":
    asyncio.run(main())
