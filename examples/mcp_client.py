"""Workflows as MCP tools: ``ponder mcp`` driven by the ``mcp`` SDK's client.

Runs offline: a stand-in model server starts in this process, a workflow folder is
written for it, and ``ponder mcp --workflows FOLDER`` runs as the client's stdio server
(as Claude Desktop or an IDE agent would start it). The call reports progress per step
and returns the answer with its evidence.

Run: python examples/mcp_client.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank

PONDER = str(Path(sys.executable).parent / "ponder")


async def main() -> None:
    async with StandinServer(StandinConfig(time_scale=0)) as standin:
        folder = Path(tempfile.mkdtemp())
        (folder / "vote.yaml").write_text(
            f"name: vote\nmodels: {{m: 'vllm:m@{standin.base_url}'}}\n"
            "layers:\n  - generate: {n: 5}\n  - vote: {}\n"
        )
        params = StdioServerParameters(
            command=PONDER,
            args=["mcp", "--workflows", str(folder)],
            env={**os.environ, "PONDER_CACHE": "false"},  # the SDK passes few by default
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            for tool in (await session.list_tools()).tools:
                print(f"tool {tool.name}: {tool.description}")

            async def progress(progress: float, total: float | None, message: str | None) -> None:
                print(f"  step {progress:g} of {total or '?'}: {message}")

            question = ProblemBank().problem(0).question
            print(question)
            result = await session.call_tool(
                "vote", {"question": question}, progress_callback=progress
            )
            out = result.structured_content or {}
            print("final:", out.get("final"), "votes:", out.get("votes"), "tokens:",
                  out.get("tokens"))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
