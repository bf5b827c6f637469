"""``ponder serve`` honours a client's tools, tool turns and response formats.

Driven the way editors and agent frameworks drive an OpenAI-compatible server: the
official ``openai`` client's own tool loop (plain and streamed) and ``parse()``, and the
``openai-agents`` framework (nobody here wrote it) pointed at the server as its endpoint.
The workflows' model is the stand-in server, whose oracle calls a calculator for its
arithmetic problems and formats answers as a schema's JSON.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from pydantic import BaseModel
from test_serve import BANK, KEY, ORACLE, question, serving, vote_workflow

from ponder.apps._serve_settings import ServeSettings
from ponder.apps.server import PonderServer
from ponder.testing import StandinConfig, StandinServer
from ponder.tools import calculate, calculator_tool
from ponder.workflows import Workflow, WorkflowSpec

# the client's tool: Ponder's calculator, offered in OpenAI's shape and run by the client
CALCULATOR: Any = {"type": "function", "function": calculator_tool().spec.model_dump()}


def expected(i: int) -> str:
    return BANK.problem(BANK.ids("arithmetic", 1, start=i * 4)[0]).answer


@pytest_asyncio.fixture
async def served() -> AsyncIterator[str]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        url = s.base_url
        server = PonderServer(
            {"vote": vote_workflow(url), "single": vote_workflow(url, "single", 1)},
            ServeSettings(api_keys=[KEY]),
        )
        async with serving(server) as base:
            yield base


@pytest_asyncio.fixture
async def client(served: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{served}/v1", api_key=KEY, max_retries=0) as c:
        yield c


async def test_the_openai_clients_tool_loop(
    client: openai.AsyncOpenAI,
) -> None:
    """Turn 1 comes back as the samples' voted tool call; the client runs it and sends the
    result; turn 2 is the workflow's answer, with the tool's result in its context."""
    messages: list[Any] = [{"role": "user", "content": question(1)}]
    first = await client.chat.completions.create(
        model="vote", messages=messages, tools=[CALCULATOR]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "calculator"
    args = json.loads(call.function.arguments)
    assert calculate(args["expression"]) == expected(1)
    assert first.usage is not None
    assert first.usage.completion_tokens > 0
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": calculate(args["expression"])},
    ]
    second = await client.chat.completions.create(
        model="vote", messages=messages, tools=[CALCULATOR]
    )
    assert second.choices[0].finish_reason == "stop"
    answer = second.choices[0].message.content or ""
    assert "\\boxed{" in answer


async def test_tool_calls_stream_as_deltas(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="vote",
        messages=[{"role": "user", "content": question(2)}],
        tools=[CALCULATOR],
        tool_choice={"type": "function", "function": {"name": "calculator"}},
        stream=True,
        stream_options={"include_usage": True},
    )
    name, arguments, finish, usage = "", "", None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                name += (d.function.name or "") if d.function else ""
                arguments += (d.function.arguments or "") if d.function else ""
            finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert name == "calculator"
    assert calculate(json.loads(arguments)["expression"]) == expected(2)
    assert usage is not None
    assert usage.total_tokens > 0


class Solution(BaseModel):
    answer: int
    explanation: str


async def test_parse_gets_a_validated_typed_answer(client: openai.AsyncOpenAI) -> None:
    """response_format json_schema: the workflow answers, its lead model writes the
    answer in the schema, and the openai client's parse() validates it."""
    done = await client.chat.completions.parse(
        model="vote",
        messages=[{"role": "user", "content": question(3)}],
        response_format=Solution,
    )
    parsed = done.choices[0].message.parsed
    assert isinstance(parsed, Solution)
    final = (done.model_extra or {})["ponder"]["final"]
    assert str(parsed.answer) == final
    plain = await client.chat.completions.create(
        model="single",
        messages=[{"role": "user", "content": question(3)}],
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in plain if c.choices])
    assert isinstance(json.loads(text), dict)


async def test_malformed_tool_fields_get_a_400_naming_them(served: str) -> None:
    user = {"role": "user", "content": question(4)}
    cases: dict[str, dict[str, Any]] = {
        "tools": {"tools": "nope"},
        "tools[0]": {"tools": [{"type": "function"}]},
        "tools[0].function.name": {"tools": [{"type": "function", "function": {"name": "a b"}}]},
        "tool_choice": {"tools": [CALCULATOR], "tool_choice": "other"},
        "unsupported field functions": {"functions": [{"name": "f"}]},
        "unsupported field response_format": {"response_format": {"type": "yaml"}},
        "unsupported field response_format.json_schema": {
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}
        },
        "unsupported field n": {"tools": [CALCULATOR], "n": 2},
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=served, headers=headers) as c:
        for field, extra in cases.items():
            r = await c.post(
                "/v1/chat/completions", json={"model": "vote", "messages": [user], **extra}
            )
            assert r.status_code == 400, (field, r.text)
            assert r.json()["error"]["message"].startswith(field), (field, r.text)
        bad_turn = {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}
        r = await c.post(
            "/v1/chat/completions", json={"model": "vote", "messages": [user, bad_turn]}
        )
        assert r.status_code == 422
        assert "tool call needs" in r.json()["error"]["message"]


async def test_a_schema_the_model_cannot_meet_is_a_502_that_says_why(served: str) -> None:
    """The reply is validated here, whatever the backend did; a repair turn quotes the
    error; when that fails too, the client learns what was wrong, not a broken JSON."""
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^ZZ-[0-9]+$"}},
        "required": ["code"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "Code", "schema": schema}}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=served, headers=headers, timeout=30) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "single", "messages": [{"role": "user", "content": question(5)}],
                  "response_format": fmt},
        )  # fmt: skip
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert "requested format" in message
    assert "at code" in message
    assert "does not match" in message


async def test_required_tool_choice_with_no_call_is_a_502(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="vote",
            messages=[{"role": "user", "content": "Tell me about the weather."}],
            tools=[CALCULATOR],
            tool_choice="required",
        )
    assert caught.value.status_code == 502
    assert "made no tool call" in str(caught.value)


async def test_a_third_party_agent_framework(
    client: openai.AsyncOpenAI,
) -> None:
    """openai-agents (from PyPI), its Chat Completions model pointed at ponder serve: the
    framework's own tool loop calls our workflow, runs its function tool, and finishes."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    used: list[str] = []

    @agents.function_tool  # type: ignore[untyped-decorator]
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        used.append(expression)
        return calculate(expression)

    agent = agents.Agent(
        name="solver",
        instructions="Use the calculator, then give the answer as \\boxed{N}.",
        tools=[calculator],
        model=agents.OpenAIChatCompletionsModel(model="vote", openai_client=client),
    )
    result = await agents.Runner.run(agent, question(6), max_turns=4)
    assert used
    assert calculate(used[0]) == expected(6)
    assert "\\boxed{" in str(result.final_output)


# -- an MCP server that dies and comes back, under a running ponder serve -------------------


async def start_mcp(port: int) -> asyncio.subprocess.Process:
    """tests/mcp_server.py over streamable HTTP on ``port``, once it accepts connections."""
    script = Path(__file__).parent / "mcp_server.py"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "http", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(400):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        except OSError:
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the MCP server did not start on port {port}")


async def test_a_restarted_mcp_server_is_reconnected_under_serve() -> None:
    """A workflow whose agents call a real MCP server (streamable HTTP), served: the
    server is killed (runs meanwhile get answers or a clear error, and serve keeps
    serving), then started again on its port, and the next run's tools work again."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    mcp = await start_mcp(port)
    try:
        async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
            spec = WorkflowSpec.model_validate({
                "name": "mcp",
                "models": {"m": f"vllm:m@{s.base_url}"},
                "layers": [{"generate": {"n": 2, "tools": [
                    {"mcp": {"url": f"http://127.0.0.1:{port}/mcp", "prefix": "units",
                             "start_timeout": 10}}]}}, "vote"],
            })  # fmt: skip
            server = PonderServer({"mcp": Workflow(spec)}, ServeSettings(api_keys=[KEY]))
            async with (
                serving(server) as base,
                openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0) as client,
            ):

                async def ask(i: int) -> tuple[int, str]:
                    try:
                        r = await client.chat.completions.create(
                            model="mcp", messages=[{"role": "user", "content": question(i)}]
                        )
                    except openai.APIStatusError as e:
                        return e.status_code, str(e)
                    return 200, r.choices[0].message.content or ""

                status, text = await ask(7)
                assert (status, f"\\boxed{{{expected(7)}}}" in text) == (200, True), text
                mcp.kill()
                await mcp.wait()
                status, text = await ask(8)  # the tool is down: no answer from it
                assert status in (200, 502), text
                assert f"\\boxed{{{expected(8)}}}" not in text
                assert "is closed" not in text
                mcp = await start_mcp(port)
                status, text = await ask(9)
                assert (status, f"\\boxed{{{expected(9)}}}" in text) == (200, True), text
    finally:
        if mcp.returncode is None:
            mcp.kill()
            await mcp.wait()
