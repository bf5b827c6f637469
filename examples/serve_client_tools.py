"""A client's own tools and typed answers through ``ponder serve``.

Three clients drive a served workflow (5 samples and a vote) the way editors and agent
frameworks drive an OpenAI-compatible server:

1. the ``openai`` client's own tool loop: the workflow's samples vote on a tool call, the
   client runs it and sends the result, the workflow answers;
2. ``parse()`` with a pydantic model: the answer comes back validated;
3. the ``openai-agents`` framework (when installed), its model pointed at the server.

Runs offline: a stand-in model server and the Ponder server start in this process on
loopback ports (in production: ``ponder serve --workflows DIR``).

Run: python examples/serve_client_tools.py
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import openai
import uvicorn
from pydantic import BaseModel

from ponder.apps import PonderServer, ServeSettings
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank
from ponder.workflows import Workflow, WorkflowSpec

CALCULATOR: Any = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def calculate(expression: str) -> str:
    """The client's tool (arithmetic only: no names, no calls)."""
    if not set(expression) <= set("0123456789+-*/(). "):
        return "Error: not arithmetic"
    return str(eval(expression, {"__builtins__": {}}))  # arithmetic only: checked above


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
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        uv = uvicorn.Server(uvicorn.Config(server.app, log_level="warning"))
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        for _ in range(500):  # uvicorn exposes a flag, not an event
            if uv.started:
                break
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
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
        uv.should_exit = True
        await task


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
