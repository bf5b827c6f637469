"""``ponder serve`` with the official openai client: a workflow becomes a model.

Runs offline: a stand-in model server and the Ponder server start in this process on
loopback ports (in production: ``ponder serve --workflows DIR``).

Run: python examples/serve_openai_client.py
"""

from __future__ import annotations

import asyncio
import socket

import openai
import uvicorn

from ponder.apps import PonderServer, ServeSettings
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank
from ponder.workflows import Workflow, WorkflowSpec


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
        uv.should_exit = True
        await task


if __name__ == "__main__":
    asyncio.run(main())
