"""``ponder mcp``: workflows as MCP tools, over stdio and streamable HTTP.

The real command runs in its own process; clients are the ``mcp`` SDK's and the MCP
inspector's CLI (``@modelcontextprotocol/inspector``, from npm: a client nobody here
wrote; ``./dev test`` installs it under ``.cache/npm``). The workflows' model is the
stand-in server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from mcp import ClientSession, StdioServerParameters
from mcp.client import streamable_http
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from test_serve import BANK, ORACLE

from ponder.testing import StandinConfig, StandinServer

ROOT = Path(__file__).parent.parent
PONDER = str(Path(sys.executable).parent / "ponder")
INSPECTOR = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "mcp-inspector"
KEY = "sk-mcp-test"
# the SDK's own HTTP client (its httpx flavour), as ponder.tools.MCPServer makes it
make_http_client: Any = getattr(streamable_http, "create_mcp_http_client")  # noqa: B009


def question(i: int) -> str:
    return BANK.problem(BANK.ids("arithmetic", 1, start=i * 4)[0]).question


def expected(i: int) -> str:
    return BANK.problem(BANK.ids("arithmetic", 1, start=i * 4)[0]).answer


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        yield s


@pytest.fixture
def workflows(tmp_path: Path, standin: StandinServer) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "vote.yaml").write_text(
        "name: vote\n"
        f"models: {{m: 'vllm:m@{standin.base_url}'}}\n"
        "layers:\n  - generate: {n: 5}\n  - vote: {}\n"
    )
    (folder / "down.yaml").write_text(  # its model server does not exist
        "name: down\n"
        "models: {m: 'vllm:m@http://127.0.0.1:9/v1'}\n"
        "layers:\n  - generate: {n: 2}\n  - vote: {}\n"
    )
    return folder


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PONDER_SERVE_")}
    env.update(PONDER_CACHE="false", PONDER_MAX_RETRIES="0", **extra)
    return env


@asynccontextmanager
async def stdio_session(folder: Path) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=PONDER, args=["mcp", "--workflows", str(folder)], env=child_env()
    )
    async with (
        stdio_client(params, errlog=sys.stderr) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_workflows_are_typed_tools_over_stdio_with_progress(workflows: Path) -> None:
    async with stdio_session(workflows) as session:
        listed = await session.list_tools()
        tools = {t.name: t for t in listed.tools}
        assert set(tools) == {"vote", "down"}
        schema = tools["vote"].input_schema
        assert schema["required"] == ["question"]
        assert schema["properties"]["question"]["type"] == "string"
        assert tools["vote"].output_schema is not None
        assert "answer" in tools["vote"].output_schema["properties"]
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        result: Any = await session.call_tool(
            "vote", {"question": question(0)}, progress_callback=on_progress
        )
        assert not result.is_error
        out = result.structured_content
        assert out["final"] == expected(0)
        assert f"\\boxed{{{expected(0)}}}" in out["answer"]
        assert sum(out["votes"].values()) == 5
        assert out["candidates"] == 5
        assert out["tokens"] > 0
        assert out["run_id"].startswith("run-")
        assert [p[:2] for p in seen] == [(1, 2), (2, 2)]  # one per step
        assert "5 candidates" in (seen[0][2] or "")


async def test_bad_arguments_and_a_dead_model_are_tool_errors(workflows: Path) -> None:
    async with stdio_session(workflows) as session:
        missing: Any = await session.call_tool("vote", {})
        assert missing.is_error
        assert "question" in missing.content[0].text
        unknown: Any = await session.call_tool("nope", {"question": "x"})
        assert unknown.is_error
        down: Any = await session.call_tool("down", {"question": question(1)})
        assert down.is_error
        assert "produced no answer" in down.content[0].text
        again: Any = await session.call_tool("vote", {"question": question(1)})
        assert not again.is_error  # the server goes on serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(workflows: Path) -> Iterator[str]:
    """``ponder mcp --port`` with an API key, as its own process."""
    port = free_port()
    proc = subprocess.Popen(
        [PONDER, "mcp", "--workflows", str(workflows), "--port", str(port)],
        env=child_env(PONDER_SERVE_API_KEYS=KEY),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        for _ in range(300):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    break
                subprocess.run(["sleep", "0.1"], check=True)
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"ponder mcp --port did not start:\n{out[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_streamable_http_needs_a_key_and_then_serves(http_server: str) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(http_server, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert r.status_code == 401
        assert "missing API key" in r.json()["error"]["message"]
        r = await c.post(http_server, json={}, headers={"Authorization": "Bearer sk-wrong-key-000"})
        assert r.status_code == 401
    async with (
        make_http_client(headers={"Authorization": f"Bearer {KEY}"}) as http,
        streamable_http_client(http_server, http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        result: Any = await session.call_tool("vote", {"question": question(2)})
        assert not result.is_error
        assert result.structured_content["final"] == expected(2)


async def test_a_cancelled_call_cancels_the_runs_model_calls(tmp_path: Path) -> None:
    """A slow model: the client cancels the call, the run's model requests are cancelled
    (the stand-in counts them), and the next call is served."""
    async with StandinServer(StandinConfig(time_scale=1.0, oracle=ORACLE)) as slow:
        folder = tmp_path / "slow"
        folder.mkdir()
        (folder / "slow.yaml").write_text(
            f"name: slow\nmodels: {{m: 'vllm:m@{slow.base_url}'}}\n"
            "layers:\n  - generate: {n: 4}\n  - vote: {}\n"
        )
        async with stdio_session(folder) as session:
            call = asyncio.create_task(session.call_tool("slow", {"question": question(3)}))
            for _ in range(400):
                if slow.stats.in_flight:
                    break
                await asyncio.sleep(0.02)
            assert slow.stats.in_flight
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            for _ in range(400):
                if slow.stats.cancelled:
                    break
                await asyncio.sleep(0.02)
            assert slow.stats.cancelled >= 1
            assert slow.stats.in_flight == 0


def inspector(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [str(INSPECTOR), "--cli", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    parsed: dict[str, Any] = json.loads(out.stdout)
    return parsed


@pytest.mark.skipif(
    not INSPECTOR.exists() and shutil.which("npm") is None,
    reason="the MCP inspector comes from npm, and npm is not installed",
)
async def test_the_mcp_inspector_lists_and_calls_the_workflows(
    workflows: Path, http_server: str
) -> None:
    """A third-party client: the MCP inspector's CLI, over stdio and over HTTP."""
    assert INSPECTOR.exists(), "./dev test installs the MCP inspector under .cache/npm"
    stdio = ["-e", "PONDER_CACHE=false", PONDER, "mcp", "--workflows", str(workflows)]
    listed = await asyncio.to_thread(inspector, *stdio, "--method", "tools/list")
    assert {t["name"] for t in listed["tools"]} == {"vote", "down"}
    called = await asyncio.to_thread(
        inspector, *stdio, "--method", "tools/call", "--tool-name", "vote",
        "--tool-arg", f"question={question(4)}",
    )  # fmt: skip
    assert called["structuredContent"]["final"] == expected(4)
    over_http = await asyncio.to_thread(
        inspector, http_server, "--transport", "http", "--header",
        f"Authorization: Bearer {KEY}", "--method", "tools/call", "--tool-name", "vote",
        "--tool-arg", f"question={question(5)}",
    )  # fmt: skip
    assert over_http["structuredContent"]["final"] == expected(5)
