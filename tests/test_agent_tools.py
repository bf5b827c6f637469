"""Typed tools, tool calling on every wire, and agents: a model with tools in a loop.

The stand-in's tool-calling oracle plays the model over HTTP (OpenAI-compatible and
Anthropic APIs); scripted fakes play the misbehaving ones (bad arguments, loops, parallel
calls); the tools themselves are real (the calculator, the OS sandbox)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio
from conftest import processes_with
from pydantic import BaseModel

from ponder import GenerateParams, Message, Model
from ponder.agents import Agent, AgentConfig, Pool, run_agent
from ponder.backends import MemoryCache
from ponder.errors import ConfigurationError, ToolExecutionError
from ponder.memory import InMemoryStore, cheatsheet_tool, search_tool, update
from ponder.testing import FakeModel, StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank
from ponder.tools import (
    MCPServer,
    Tool,
    calculator_tool,
    python_tool,
    resolve_tools,
    tool,
)
from ponder.types import ToolCall
from ponder.workflows import Workflow, WorkflowSpec

BANK = ProblemBank(OracleConfig().bank_seed, OracleConfig().distractors)


def problem(kind: Literal["arithmetic", "multistep"] = "multistep", i: int = 0) -> tuple[str, str]:
    p = BANK.problem(BANK.ids(kind, 1, start=i)[0])
    return p.question, p.answer


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(StandinConfig(time_scale=0)) as s:
        yield s


# -- typed tools ----------------------------------------------------------------------------


class Unit(Enum):
    C = "celsius"
    F = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str = "FR"


def test_a_functions_signature_and_docstring_make_the_schema() -> None:
    @tool
    def weather(place: Place, unit: Unit = Unit.C, days: int = 1) -> str:
        """Forecast for a place.

        Args:
            place: where
            unit: degrees in
            days: how many days ahead
                (one to seven)
        """
        return f"{place.city}: sunny"

    spec = weather.spec
    assert spec.name == "weather"
    assert spec.description == "Forecast for a place."
    props = spec.parameters["properties"]
    assert isinstance(props, dict)
    assert props["days"] == {"default": 1, "description": "how many days ahead (one to seven)",
                             "type": "integer"}  # fmt: skip
    assert spec.parameters["required"] == ["place"]
    assert spec.parameters["additionalProperties"] is False
    assert "title" not in json.dumps(spec.parameters)  # pydantic's titles are dropped
    assert weather(Place(city="Lyon")) == "Lyon: sunny"  # still a plain function


def test_a_sphinx_docstring_and_a_name_of_ones_own() -> None:
    def f(x: float) -> float:
        """Square a number.

        :param x: the number
        """
        return x * x

    t = Tool(f, name="square")
    assert t.spec.name == "square"
    props = t.spec.parameters["properties"]
    assert isinstance(props, dict)
    assert props["x"] == {"description": "the number", "type": "number"}


def test_what_cannot_be_a_tool_is_refused() -> None:
    def variadic(*xs: int) -> int:
        return sum(xs)

    with pytest.raises(ConfigurationError, match=r"\*xs"):
        Tool(variadic)
    with pytest.raises(ConfigurationError, match="two tools are named 'calculator'"):
        resolve_tools(["calculator", calculator_tool()])
    with pytest.raises(ConfigurationError, match="did you mean 'calculator'"):
        resolve_tools(["calculater"])
    with pytest.raises(ConfigurationError, match="tool_choice 'nope'"):
        GenerateParams.build(tools=[calculator_tool()], tool_choice="nope")


async def test_bad_arguments_exceptions_and_timeouts_come_back_as_error_results() -> None:
    @tool(timeout=0.2)
    async def slow(seconds: float) -> str:
        """Sleep."""
        await asyncio.sleep(seconds)
        return "done"

    @tool
    def boom(n: int) -> int:
        """Fail."""
        raise ValueError(f"no {n}")

    calc = calculator_tool()
    r = await calc.call(ToolCall(id="1", name="calculator", arguments='{"expression": 5}'))
    assert r.error
    assert "expression: Input should be a valid string" in r.content
    r = await calc.call(ToolCall(id="2", name="calculator", arguments="{not json"))
    assert r.error
    assert "not valid JSON" in r.content
    r = await calc.call(ToolCall(id="3", name="calculator", arguments='{"expr": "1"}'))
    assert "expression: Field required" in r.content
    assert "expr: Extra inputs are not permitted" in r.content
    r = await boom.call(ToolCall(id="4", name="boom", arguments='{"n": 3}'))
    assert (r.error, r.content) == (True, "Error: boom raised ValueError: no 3")
    r = await slow.call(ToolCall(id="5", name="slow", arguments='{"seconds": 5}'))
    assert r.error
    assert "did not finish within 0.2 s" in r.content
    r = await slow.call(ToolCall(id="6", name="slow", arguments='{"seconds": 0}'))
    assert (r.error, r.content) == (False, "done")


# -- tool calling on the wires --------------------------------------------------------------


def standin_model(standin: StandinServer, api: str, monkeypatch: pytest.MonkeyPatch) -> Model:
    """The stand-in through the OpenAI-compatible or the Anthropic wire."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    ref = f"vllm:m@{standin.base_url}" if api == "openai" else f"anthropic:m@{standin.root_url}"
    return Model(ref, cache=False)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_an_agent_solves_a_problem_with_the_calculator(
    standin: StandinServer, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = standin_model(standin, api, monkeypatch)
    q, answer = problem()
    steps: list[object] = []
    try:
        run = await run_agent(model, q, [calculator_tool()], on_step=steps.append)
    finally:
        await model.aclose()
    assert run.stopped == "answered"
    assert f"\\boxed{{{answer}}}" in run.text
    (call,) = run.steps[0].tool_uses
    assert call.name == "calculator"
    assert json.loads(call.arguments)["expression"].startswith("(((")
    assert (call.result, call.error) == (answer, False)
    assert steps == run.steps  # each turn was reported as it ended
    assert run.spend.requests == 2


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_streamed_tool_calls_are_put_together(
    standin: StandinServer, api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = standin_model(standin, api, monkeypatch)
    q, _ = problem("arithmetic")
    try:
        text: list[str] = []
        c = await model.generate_streamed(q, text.append, tools=[calculator_tool()])
    finally:
        await model.aclose()
    (call,) = c.choices[0].tool_calls
    assert c.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.arguments) == {"expression": q.split("What is ")[1].rstrip("?")}
    assert text == []  # no answer text: the turn only called a tool


async def test_a_rerun_of_an_agent_is_served_from_the_cache(standin: StandinServer) -> None:
    model = Model(f"vllm:m@{standin.base_url}", cache=MemoryCache())
    q, answer = problem(i=1)
    try:
        first = await run_agent(model, q, [calculator_tool()])
        again = await run_agent(model, q, [calculator_tool()])
    finally:
        await model.aclose()
    assert first.spend.requests == 2
    assert again.spend.requests == 0  # both turns, the tool call included, were cached
    assert again.text == first.text
    assert f"\\boxed{{{answer}}}" in again.text
    assert again.steps[0].tool_uses[0].arguments == first.steps[0].tool_uses[0].arguments


# -- agents that misbehave ------------------------------------------------------------------


def calc(expr: object, i: int = 0) -> ToolCall:
    return ToolCall(id=f"c{i}", name="calculator", arguments=json.dumps({"expression": expr}))


async def test_a_validation_error_goes_back_to_the_model_which_corrects_itself() -> None:
    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> object:
        last = msgs[-1]
        if last.role == "user":
            return calc(6 * 7)  # a number where the schema wants a string
        if last.content.startswith("Error"):
            return calc("6 * 7", 1)
        return f"\\boxed{{{last.content}}}"

    model = FakeModel(respond)  # type: ignore[arg-type]
    run = await run_agent(model, "What is 6 * 7?", [calculator_tool()])
    assert run.stopped == "answered"
    assert run.text == "\\boxed{42}"
    first, second = (s.tool_uses[0] for s in run.steps[:2])
    assert first.error
    assert "Input should be a valid string" in first.result
    assert (second.error, second.result) == (False, "42")
    # what the model was shown: the error, as the result of its own call
    seen = model.calls[1].messages[-1]
    assert (seen.role, seen.tool_call_id) == ("tool", "c0")
    assert seen.content.startswith("Error: invalid arguments: expression")


async def test_parallel_calls_run_together_and_each_result_answers_its_call() -> None:
    started: list[str] = []
    both = asyncio.Event()

    @tool
    async def lookup(key: str) -> str:
        """Look a key up."""
        started.append(key)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)  # only returns once the other call runs too
        return key.upper()

    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> object:
        if msgs[-1].role == "user":
            return [ToolCall(id="a", name="lookup", arguments='{"key": "x"}'),
                    ToolCall(id="b", name="lookup", arguments='{"key": "y"}')]  # fmt: skip
        results = {m.tool_call_id: m.content for m in msgs if m.role == "tool"}
        return f"{results['a']}{results['b']}"

    run = await run_agent(FakeModel(respond), "go", [lookup])  # type: ignore[arg-type]
    assert run.text == "XY"
    assert sorted(started) == ["x", "y"]


async def test_an_unknown_tool_is_an_error_result_not_a_crash() -> None:
    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> object:
        if msgs[-1].role == "user":
            return ToolCall(id="z", name="search_web", arguments="{}")
        return "I cannot search; \\boxed{unknown}"

    run = await run_agent(FakeModel(respond), "q", [calculator_tool()])  # type: ignore[arg-type]
    use = run.steps[0].tool_uses[0]
    assert use.error
    assert "there is no tool 'search_web' (tools: calculator)" in use.result


async def test_a_loop_is_stopped_and_the_model_asked_for_its_answer() -> None:
    def respond(msgs: Sequence[Message], p: GenerateParams, i: int) -> object:
        if not p.tools:  # the last turn, tools withdrawn
            return "Fine: \\boxed{42}"
        return calc("6 * 7", i)  # the same call, again and again

    model = FakeModel(respond)  # type: ignore[arg-type]
    run = await run_agent(model, "q", [calculator_tool()], max_steps=10, repeat_limit=2)
    assert run.stopped == "loop"
    assert len(run.steps) == 4  # three turns of the same call, then the answer
    assert run.text == "Fine: \\boxed{42}"
    assert "You made exactly these calls 2 times" in model.calls[2].messages[-1].content


async def test_step_token_and_time_limits_stop_cleanly() -> None:
    counter = iter(range(1000))

    def respond(msgs: Sequence[Message], p: GenerateParams, i: int) -> object:
        if not p.tools:
            return "out of steps: \\boxed{1}"
        return calc(f"{next(counter)} + 1", i)  # always a new call: never a loop

    run = await run_agent(FakeModel(respond), "q", [calculator_tool()], max_steps=3)  # type: ignore[arg-type]
    assert (run.stopped, len(run.steps), run.text) == ("max_steps", 4, "out of steps: \\boxed{1}")

    run = await run_agent(FakeModel(respond), "q", [calculator_tool()], max_tokens=30)  # type: ignore[arg-type]
    assert run.stopped == "max_tokens"
    assert run.spend.total_tokens >= 30
    assert len(run.steps) < 8

    @tool
    async def wait(seconds: float) -> str:
        """Wait."""
        await asyncio.sleep(seconds)
        return "ok"

    sleepy = FakeModel([ToolCall(id="w", name="wait", arguments='{"seconds": 30}')])
    run = await run_agent(sleepy, "q", [wait], time_limit=0.3)
    assert run.stopped == "timeout"


async def test_a_cancelled_agent_cancels_its_tools() -> None:
    cancelled = asyncio.Event()
    running = asyncio.Event()

    @tool
    async def forever() -> str:
        """Never ends."""
        running.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    model = FakeModel([ToolCall(id="f", name="forever", arguments="{}")])
    task = asyncio.create_task(run_agent(model, "q", [forever]))
    await asyncio.wait_for(running.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), 5)


# -- the agent as a component ---------------------------------------------------------------


async def test_agents_compose_with_a_vote_in_a_yaml_workflow(standin: StandinServer) -> None:
    q, answer = problem(i=2)
    spec = WorkflowSpec.model_validate(
        {
            "name": "tools-vote",
            "models": {"m": f"vllm:weak@{standin.base_url}"},
            "layers": [
                {"generate": {"n": 4, "tools": ["calculator", {"python": {"timeout": 20}}]}},
                "vote",
            ],
        }
    )
    wf = Workflow(spec)
    events = [e async for e, _ in wf.aevents(q)]
    finished = [e for e in events if e.kind == "node_finished"]
    cards = finished[0].data["new_candidates"]
    assert len(cards) == 4
    assert all(c["tools"][0]["name"] == "calculator" and c["tools"][0]["result"] == answer
               for c in cards)  # fmt: skip
    assert finished[1].data["final"] == answer
    assert finished[1].data["vote"]["tally"] == {answer: 4.0}


async def test_the_agent_component_keeps_each_runs_trajectory(standin: StandinServer) -> None:
    model = Model(f"vllm:m@{standin.base_url}", cache=False)
    q, answer = problem("arithmetic", 3)
    try:
        agent = Agent(model, AgentConfig(n=3, tools=("calculator",)))
        pool = await agent(Pool(query=q))
    finally:
        await model.aclose()
    assert [c.answer for c in pool.candidates] == [answer] * 3
    assert all(len(c.trajectory) == 2 for c in pool.candidates)
    assert pool.notes[-1] == "agent: 3 run(s), 3 tool call(s)"
    assert pool.spend.requests == 6
    with pytest.raises(ConfigurationError, match="at least one tool"):
        Agent(model, AgentConfig())


async def test_memory_tools_search_a_corpus_and_read_the_cheatsheet(tmp_path: Path) -> None:
    corpus = tmp_path / "facts.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"text": t})
            for t in [
                "The Eiffel tower is 330 m tall.",
                "Mont Blanc is 4806 m high.",
                "The Seine flows through Paris.",
            ]
        )
    )
    (search,) = resolve_tools([{"search": {"corpus": str(corpus), "k": 1}}])
    assert isinstance(search, Tool)
    r = await search.call(ToolCall(id="s", name="search", arguments='{"query": "Mont Blanc"}'))
    assert r.content == "[1] Mont Blanc is 4806 m high."
    store = InMemoryStore()
    sheet = cheatsheet_tool(store, "math")
    r = await sheet.call(ToolCall(id="e", name="cheatsheet", arguments="{}"))
    assert r.content.startswith("The cheatsheet is empty")

    async def write(_old: object) -> str:
        return "## Primes\nTest divisors up to sqrt(n).\n\n## Fractions\nReduce by the gcd."

    await update(store, "math", write)
    r = await sheet.call(ToolCall(id="e", name="cheatsheet", arguments='{"topic": "gcd"}'))
    assert r.content == "## Fractions\nReduce by the gcd."
    with pytest.raises(ConfigurationError, match="does not exist"):
        search_tool(tmp_path / "missing.jsonl")


async def test_the_python_tool_runs_code_in_the_sandbox() -> None:
    py = python_tool({"timeout": 20})
    r = await py.call(ToolCall(id="p", name="python", arguments=json.dumps(
        {"code": "import math\nprint(math.comb(10, 3))"})))  # fmt: skip
    assert (r.error, r.content.strip()) == (False, "120")
    r = await py.call(ToolCall(id="p", name="python", arguments='{"code": "1/0"}'))
    assert r.error
    assert "ZeroDivisionError" in r.content


# -- MCP ------------------------------------------------------------------------------------

MCP_SERVER = Path(__file__).parent / "mcp_server.py"


@pytest_asyncio.fixture
async def mcp_http() -> AsyncIterator[str]:
    """The test MCP server over streamable HTTP, started on a free loopback port."""
    import socket
    import sys

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(MCP_SERVER), "http", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        await proc.wait()


async def test_mcp_tools_over_stdio_check_arguments_and_report_errors() -> None:
    import sys

    async with MCPServer(command=[sys.executable, str(MCP_SERVER)], prefix="units") as srv:
        tools = {t.name: t for t in await srv.tools()}
        assert sorted(tools) == ["units_convert", "units_evaluate", "units_swatch"]
        convert = tools["units_convert"]
        assert convert.spec.description.startswith("Convert a length to metres.")
        assert convert.spec.parameters["required"] == ["value", "unit"]
        ok = await convert.call(ToolCall(id="1", name="units_convert",
                                         arguments='{"value": 3, "unit": "km"}'))  # fmt: skip
        assert (ok.error, ok.content) == (False, "3000.0")
        # checked against the server's schema before it is sent
        bad = await convert.call(ToolCall(id="2", name="units_convert", arguments='{"value": 3}'))
        assert bad.error
        assert "'unit' is a required property" in bad.content
        # the server's own error comes back as an error result
        err = await convert.call(ToolCall(id="3", name="units_convert",
                                          arguments='{"value": 3, "unit": "furlong"}'))  # fmt: skip
        assert err.error
    with pytest.raises(ConfigurationError, match="either command"):
        MCPServer()


async def test_an_mcp_tool_serves_agents_in_a_generate_then_vote_workflow(
    standin: StandinServer, mcp_http: str
) -> None:
    """Four agent samples share one MCP server (streamable HTTP) and vote."""
    q, answer = problem(i=4)
    spec = WorkflowSpec.model_validate(
        {
            "name": "mcp-vote",
            "models": {"m": f"vllm:weak@{standin.base_url}"},
            "layers": [
                {"generate": {"n": 4, "tools": [{"mcp": {"url": mcp_http, "prefix": "units"}}]}},
                "vote",
            ],
        }
    )
    result = await Workflow(spec).arun(q)
    pool = result.output
    assert pool.final == answer
    assert len(pool.candidates) == 4
    for c in pool.candidates:
        (use,) = c.trajectory[0].tool_uses
        assert (use.name, use.result, use.error) == ("units_evaluate", answer, False)


async def test_an_mcp_server_that_does_not_start_is_a_clear_error() -> None:
    srv = MCPServer(command=["/nonexistent/mcp-server"], start_timeout=10)
    with pytest.raises(ToolExecutionError, match="cannot start MCPServer"):
        await srv.tools()


def test_a_local_models_tool_calls_are_read_in_the_forms_small_models_write() -> None:
    from ponder.backends._local import parse_tool_calls

    call_json = '{"name": "calculator", "arguments": {"expression": "2+2"}}'
    tagged = f"Let me compute.\n<tool_call>\n{call_json}\n</tool_call>"
    head, (call,) = parse_tool_calls(tagged)
    assert head == "Let me compute."
    assert (call.name, json.loads(call.arguments)) == ("calculator", {"expression": "2+2"})
    fenced = '```json\n{"name": "calculator", "arguments": {"expression": "1"}}\n```'
    assert parse_tool_calls(fenced)[1][0].name == "calculator"
    two = '[{"name": "a", "arguments": {}}, {"name": "b", "parameters": {"x": 1}}]'
    assert [(c.name, c.arguments) for c in parse_tool_calls(two)[1]] == [
        ("a", "{}"), ("b", '{"x": 1}'),
    ]  # fmt: skip
    assert parse_tool_calls("The answer is \\boxed{4}.") == ("The answer is \\boxed{4}.", ())
    assert parse_tool_calls('{"answer": 4}') == ('{"answer": 4}', ())  # JSON, but no call


async def test_a_server_without_a_tool_api_gets_tools_as_constrained_json(
    loopback_server: Callable[[list[Any]], Awaitable[str]],
) -> None:
    """The 'json' tools quirk: tools told in the system prompt, the reply constrained by a
    JSON Schema to a call or an answer, and read back as a ToolCall or the answer."""
    from dataclasses import replace

    from aiohttp import web

    from ponder.backends import get_provider, register_provider, with_quirks

    bodies: list[dict[str, Any]] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        content = (
            '{"tool": "calculator", "arguments": {"expression": "6 * 7"}}'
            if turn == 0
            else '{"answer": "It is \\\\boxed{42}."}'
        )
        return web.json_response({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}})  # fmt: skip

    url = await loopback_server([("POST", "/v1/chat/completions", chat)])
    register_provider(
        replace(with_quirks(get_provider("vllm"), tools="json"), name="jsontools"),
        replace_existing=True,
    )
    model = Model(f"jsontools:m@{url}/v1", cache=False)
    try:
        run = await run_agent(model, "What is 6 * 7?", [calculator_tool()])
    finally:
        await model.aclose()
    assert run.text == "It is \\boxed{42}."
    assert run.steps[0].tool_uses[0].result == "42"
    first, second = bodies
    assert "tools" not in first
    schema = first["response_format"]["json_schema"]["schema"]
    assert [o["properties"].get("tool", {}).get("const") for o in schema["anyOf"]] == [
        "calculator", None,
    ]  # fmt: skip
    assert "calculator:" in first["messages"][0]["content"]
    assert second["messages"][-1] == {"role": "user", "content": "Result of calculator: 42"}
    assert json.loads(second["messages"][-2]["content"])["tool"] == "calculator"


# -- program-aided reasoning ----------------------------------------------------------------


async def test_program_aided_reasoning_runs_each_program_and_votes_on_what_they_print() -> None:
    from ponder.agents import ProgramAided, ProgramConfig, Vote, VoteConfig

    replies = [
        "```python\ntrays = 12 * 24\nprint(trays - 150)\n```",  # right
        "```python\nprint(12 * 24 - 150)\n```",  # right
        "```python\nprint(12 * 24 + 150)\n```",  # wrong
        "```python\nprint(1 / 0)\n```",  # fails: abstains
        "The answer is 138.",  # no program
        "```python\nwhile True:\n    pass\n```",  # runs out of time
    ]
    model = FakeModel(replies)
    pool = await ProgramAided(model, ProgramConfig(n=6, timeout=2))(Pool(query="cookies?"))
    got = [(c.answer, c.error) for c in pool.candidates]
    assert got[:3] == [("138", None), ("138", None), ("438", None)]
    assert "ZeroDivisionError" in (got[3][1] or "")
    assert got[4] == (None, "no program in the reply")
    assert (got[5][1] or "").startswith("the program failed")
    assert pool.notes[-1] == "program: 3 of 6 programs ran and printed an answer"
    assert "Output:\n138" in pool.candidates[0].text
    voted = await Vote(VoteConfig(answer_kind="number"))(pool)
    assert voted.final == "138"
    assert voted.vote is not None
    assert (voted.vote.counted, voted.vote.abstained) == (3, 3)


def test_a_program_is_found_in_the_forms_models_write() -> None:
    from ponder.agents import extract_program

    assert extract_program("Here:\n```python\nprint(1)\n```\nDone.") == "print(1)"
    assert extract_program("```\nx = 2\nprint(x)\n```") == "x = 2\nprint(x)"
    assert extract_program("```python\nprint(3)") == "print(3)"  # cut by the token limit
    assert extract_program("x = 4\nprint(x)") == "x = 4\nprint(x)"
    assert extract_program("The answer is 5.") is None


def test_a_program_ending_in_a_bare_expression_prints_it() -> None:
    from ponder.agents._program import print_last_expression

    assert print_last_expression("x = 2\nx * 3") == "x = 2\nprint(x * 3)"
    assert print_last_expression("( 2 * 7 ) + -7") == "print(2 * 7 + -7)"
    assert print_last_expression("print(1)") == "print(1)"
    assert print_last_expression("x = 1") == "x = 1"
    assert print_last_expression("x =") == "x ="  # does not parse: run as it is


async def test_on_text_receives_the_answer_of_a_turn_that_was_offered_tools() -> None:
    """A model that answers at once, or after a tool call, still reaches the live sink
    (it used to be called only for the forced final answer)."""

    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> object:
        if msgs[-1].role == "user" and "sum" in msgs[-1].content:
            return calc("2 + 2")
        if msgs[-1].role == "tool":
            return f"The sum is \\boxed{{{msgs[-1].content}}}"
        return "Paris"

    seen: list[str] = []
    direct = await run_agent(FakeModel(respond), "capital?", [calculator_tool()],  # type: ignore[arg-type]
                             on_text=seen.append)  # fmt: skip
    assert direct.text == "Paris"
    assert seen == ["Paris"]
    seen.clear()
    after_tool = await run_agent(FakeModel(respond), "the sum of 2 and 2", [calculator_tool()],  # type: ignore[arg-type]
                                 on_text=seen.append)  # fmt: skip
    assert after_tool.text == "The sum is \\boxed{4}"
    assert "".join(seen) == after_tool.text


def test_call_objects_one_per_line_are_parallel_calls_never_the_answer() -> None:
    from ponder.backends._local import parse_tool_calls

    reply = (
        '{"name": "calculator", "arguments": {"expression": "53 * 7"}}\n'
        '{"name": "calculator", "arguments": {"expression": "371 + 57"}}\n'
    )
    text, calls = parse_tool_calls(reply, 0)
    assert text == ""
    assert [c.name for c in calls] == ["calculator", "calculator"]
    assert json.loads(calls[1].arguments) == {"expression": "371 + 57"}
    assert len({c.id for c in calls}) == 2
    # prose that merely starts with a brace stays an answer
    prose = "{x} is the set; the answer is 4"
    assert parse_tool_calls(prose, 0) == (prose, ())


async def test_a_killed_mcp_server_is_reconnected_and_its_errors_are_wrapped_once(
    tmp_path: Path,
) -> None:
    import os
    import shutil
    import signal
    import sys

    # a copy of the server under a name of its own, so this test finds only its process
    token = f"mcp_server_{os.getpid()}_{id(tmp_path)}.py"
    script = tmp_path / token
    shutil.copy(MCP_SERVER, script)
    async with MCPServer(command=[sys.executable, str(script)], prefix="units",
                         env={"PYTHONPATH": str(MCP_SERVER.parent.parent)}) as srv:  # fmt: skip
        (convert,) = [t for t in await srv.tools() if t.name == "units_convert"]

        def call(i: int, unit: str = "km") -> ToolCall:
            return ToolCall(id=str(i), name="units_convert",
                            arguments=json.dumps({"value": 2, "unit": unit}))  # fmt: skip

        assert (await convert.call(call(1))).content == "2000.0"
        err = await convert.call(call(2, "furlong"))
        assert err.error
        assert err.content.lower().count("error") == 1  # the server's own words, once
        assert "convert" in err.content
        for pid in await asyncio.to_thread(processes_with, token):
            os.kill(pid, signal.SIGKILL)
        # the first call after the death may find the connection closed: a clear error
        # (the call may have been in flight); the next one reconnects
        first = await convert.call(call(3))
        if first.error:
            assert "stopped during the call" in first.content
            assert "reconnected on the next call" in first.content
        again = await convert.call(call(4))  # a new process, and the same Tool object
        assert (again.error, again.content) == (False, "2000.0")
        assert srv.connected


async def test_an_mcp_server_that_cannot_start_says_why() -> None:
    srv = MCPServer(url="http://127.0.0.1:9/mcp", start_timeout=10, reconnects=0)
    with pytest.raises(ToolExecutionError) as e:
        await srv.tools()
    assert "TaskGroup" not in str(e.value)
    assert "Connect" in str(e.value)  # the real cause: httpx.ConnectError


def test_binary_mcp_content_is_described_not_dumped() -> None:
    from types import SimpleNamespace

    from ponder.tools._mcp import _output

    blob = SimpleNamespace(uri="file:///a.png", mime_type="image/png", blob="iVBORw0K" * 100)
    result = SimpleNamespace(content=[
        SimpleNamespace(type="text", text="here:"),
        SimpleNamespace(type="resource", resource=blob),
        SimpleNamespace(type="image", mime_type="image/jpeg", data="AAAA" * 10),
    ])  # fmt: skip
    out = _output(result)
    assert out.text.splitlines() == [
        "here:",
        "[binary resource file:///a.png: image/png, 600 bytes]",
        "[image: image/jpeg, 30 bytes]",
    ]
    assert [(a.kind, a.mime_type, a.uri) for a in out.attachments] == [
        ("blob", "image/png", "file:///a.png"),
        ("image", "image/jpeg", None),
    ]
    assert out.attachments[1].content() == bytes(30)


async def test_an_mcp_image_reaches_the_agents_trajectory_typed() -> None:
    """A real server's image block: the model reads a description, the trajectory keeps
    the image's bytes as a typed attachment."""
    import sys

    sys.path.insert(0, str(MCP_SERVER.parent))
    from mcp_server import PIXEL

    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> object:
        if msgs[-1].role == "tool":
            return "Here is the swatch."
        return ToolCall(id="s1", name="units_swatch", arguments='{"name": "red"}')

    async with MCPServer(command=[sys.executable, str(MCP_SERVER)], prefix="units",
                         env={"PYTHONPATH": str(MCP_SERVER.parent.parent)}) as srv:  # fmt: skip
        run = await run_agent(FakeModel(respond), "show red", [srv])  # type: ignore[arg-type]
    (use,) = run.steps[0].tool_uses
    assert use.result.splitlines() == ["swatch red:", f"[image: image/png, {len(PIXEL)} bytes]"]
    (image,) = use.attachments
    assert (image.kind, image.mime_type) == ("image", "image/png")
    assert image.content() == PIXEL


async def test_an_mcp_server_that_never_answers_stops_at_start_timeout() -> None:
    import sys

    srv = MCPServer(command=[sys.executable, "-c", "import time; time.sleep(60)"],
                    start_timeout=1, reconnects=0)  # fmt: skip
    with pytest.raises(ToolExecutionError, match=r"did not answer within 1 s"):
        await srv.tools()
    assert not srv.connected


# -- tools and typed answers compose ----------------------------------------------------------


class Measured(BaseModel):
    value: int
    unit: str


def typed_agent(json_reply: str) -> Callable[[Sequence[Message], GenerateParams, int], object]:
    """Calls the calculator, answers in prose, then writes ``json_reply`` when asked for
    the typed answer (the model layer validates it against the schema it sent)."""

    def respond(msgs: Sequence[Message], p: GenerateParams, _i: int) -> object:
        last = msgs[-1]
        if last.role == "user" and "JSON" in last.content:
            assert p.json_schema is not None  # the schema is sent as a constraint
            return json_reply
        if last.role == "user" and not p.json_schema and any(m.role == "tool" for m in msgs):
            return json_reply  # a repair turn
        if last.role == "tool":
            return f"It is \\boxed{{{last.content}}} metres."
        return calc("2 + 2")

    return respond


async def test_tools_then_a_typed_answer() -> None:
    run = await run_agent(
        FakeModel(typed_agent('{"value": 4, "unit": "m"}')),  # type: ignore[arg-type]
        "how long, in metres, are 2 m and 2 m?",
        [calculator_tool()],
        output=Measured,
    )
    assert run.value == Measured(value=4, unit="m")
    assert run.stopped == "answered"
    assert [len(s.tool_uses) for s in run.steps] == [1, 0, 0]  # call, prose, JSON
    assert run.text == "It is \\boxed{4} metres."


async def test_generate_with_tools_and_output_gives_typed_candidates() -> None:
    from ponder.agents import Generate, GenerateConfig

    good = Generate(
        FakeModel(typed_agent('{"value": 4, "unit": "m"}')),  # type: ignore[arg-type]
        GenerateConfig(n=2, tools=("calculator",), output=Measured),
    )
    pool = await good(Pool(query="2 m and 2 m?"))
    assert [c.value for c in pool.candidates] == [{"value": 4, "unit": "m"}] * 2
    assert pool.candidates[0].answer == '{"unit": "m", "value": 4}'
    assert pool.candidates[0].trajectory[0].tool_uses[0].result == "4"
    bad = Generate(
        FakeModel(typed_agent('{"value": "four"}')),  # type: ignore[arg-type]
        GenerateConfig(n=1, tools=("calculator",), output=Measured),
    )
    pool = await bad(Pool(query="2 m and 2 m?"))
    (cand,) = pool.candidates
    assert cand.value is None
    assert cand.error == "the agent's answer is not a valid Measured"


def test_a_turn_of_repeated_calls_cut_by_the_token_limit_is_one_call() -> None:
    """Seen on qwen0.5b: after a tool result it wrote the same call line again and again
    until max_tokens cut the last one; that is one call, never the answer."""
    from ponder.backends._local import parse_tool_calls

    line = '{"name": "convert_time", "arguments": {"time": "09:30", "target": "Asia/Tokyo"}}'
    text, calls = parse_tool_calls("\n".join([line] * 4 + ['{"name": "convert_time", "argu']))
    assert text == ""
    assert [(c.name, json.loads(c.arguments)["time"]) for c in calls] == [("convert_time", "09:30")]
    fenced = "```json\n" + line + "\n" + line.replace("09:30", "10:00") + "\n```"
    assert len(parse_tool_calls(fenced)[1]) == 2  # two different calls stay two
    assert parse_tool_calls('{"name": "f", "argu')[1] == ()  # nothing complete: no call


async def test_a_reply_that_only_looks_like_a_call_is_never_the_answer() -> None:
    def respond(msgs: Sequence[Message], _p: GenerateParams, i: int) -> object:
        if msgs[-1].role == "tool":
            return "The sum is \\boxed{4}."
        if "could not be read" in msgs[-1].content:
            return calc("2 + 2")
        return '{"name": "calculator", "arguments": {"expression": "2 +'  # cut off

    run = await run_agent(FakeModel(respond), "2 + 2?", [calculator_tool()])  # type: ignore[arg-type]
    assert run.text == "The sum is \\boxed{4}."
    assert run.stopped == "answered"
    assert [len(s.tool_uses) for s in run.steps] == [0, 1, 0]  # unreadable, call, answer
