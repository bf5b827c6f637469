"""The providers' own payloads (tests/payloads/) through Ponder's wires: parallel tool
calls, streamed tool-call pieces (OpenAI's and Ollama's way), Anthropic's tool_use
blocks and their input_json_delta stream, n choices in one response, logprobs with
their alternatives, streamed usage after the finish, and 429s with Retry-After."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ponder import Model, Settings

PAYLOADS = Path(__file__).parent / "payloads"
Start = Callable[[list[Any]], Awaitable[str]]
WEATHER = {"type": "object", "properties": {"location": {"type": "string"}},
           "required": ["location"]}  # fmt: skip


def tools() -> list[dict[str, Any]]:
    return [{"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}]


def replay(name: str, stream_name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=(PAYLOADS / name).read_bytes(),
                                content_type="application/json")  # fmt: skip
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write((PAYLOADS / stream_name).read_bytes())
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("stream_file", ["openai_tool_calls_stream.txt",
                                         "ollama_tool_calls_stream.txt"])  # fmt: skip
async def test_openai_parallel_tool_calls_plain_and_streamed(
    loopback_server: Start, stream_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    url = await loopback_server(
        [("POST", "/v1/chat/completions", replay("openai_parallel_tool_calls.json", stream_file))]
    )
    async with Model(f"openai:gpt-4o@{url}/v1", cache=False) as m:
        c = await m.generate("Weather in Paris and Lyon?", tools=tools())
        text: list[str] = []
        s = await m.generate_streamed("Weather in Paris and Lyon?", text.append, tools=tools())
    plain = c.choices[0]
    assert plain.finish_reason == "tool_calls"
    assert plain.text == ""
    assert [(t.id, json.loads(t.arguments)) for t in plain.tool_calls] == [
        ("call_abc", {"location": "Paris"}), ("call_def", {"location": "Lyon"}),
    ]  # fmt: skip
    streamed = s.choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert [json.loads(t.arguments)["location"] for t in streamed.tool_calls] == ["Paris", "Lyon"]
    assert len({t.id for t in streamed.tool_calls}) == 2  # Ollama's shared index 0 split apart
    assert "".join(text) == ""


async def test_anthropic_tool_use_blocks_plain_and_streamed(
    loopback_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    url = await loopback_server(
        [
            (
                "POST",
                "/v1/messages",
                replay("anthropic_tool_use.json", "anthropic_tool_use_stream.txt"),
            )
        ]
    )
    async with Model(f"anthropic:claude-sonnet-4-5@{url}", cache=False) as m:
        c = await m.generate("Weather in Paris and Lyon?", tools=tools())
        text: list[str] = []
        s = await m.generate_streamed("Weather in Paris?", text.append, tools=tools())
    plain = c.choices[0]
    assert plain.finish_reason == "tool_calls"
    assert plain.text == "I'll check the weather in both cities."
    assert [(t.name, json.loads(t.arguments)) for t in plain.tool_calls] == [
        ("get_weather", {"location": "Paris"}), ("get_weather", {"location": "Lyon"}),
    ]  # fmt: skip
    assert c.usage.prompt_tokens == 472
    streamed = s.choices[0]
    assert "".join(text) == "Let me check the weather."
    (call,) = streamed.tool_calls
    assert (call.id, json.loads(call.arguments)) == ("toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                                                     {"location": "Paris"})  # fmt: skip
    assert streamed.finish_reason == "tool_calls"


async def test_llama_server_is_asked_once_before_a_prefill(loopback_server: Start) -> None:
    """The llamacpp: preset continues a trailing assistant message only on llama.cpp's
    llama-server, which it recognises by its /props endpoint (asked once per server)."""
    probes: list[str] = []
    bodies: list[dict[str, Any]] = []

    async def props(request: web.Request) -> web.Response:
        probes.append(request.path)
        return web.json_response({"default_generation_settings": {}})

    async def chat(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.json_response({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": " world."}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}})  # fmt: skip

    url = await loopback_server([("GET", "/props", props), ("POST", "/v1/chat/completions", chat)])
    async with Model(f"llamacpp:m@{url}/v1", cache=False) as m:
        first = await m.generate("Greet", prefill="Hello")
        await m.generate("Greet again", prefill="Hi")
    assert first.text == "Hello world."
    assert probes == ["/props"]
    assert bodies[0]["messages"][-1] == {"role": "assistant", "content": "Hello"}


def served(*names: str) -> tuple[Callable[[web.Request], Awaitable[web.StreamResponse]], list[Any]]:
    """A handler that answers request k with payload ``names[k]`` (the last one after
    that): a ``.json`` completion, a ``.txt`` event stream, or an error file
    (``{"status", "headers", "body"}``); it records each request's body."""
    bodies: list[Any] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        name = names[min(len(bodies), len(names)) - 1]
        raw = (PAYLOADS / name).read_bytes()
        if name.endswith(".txt"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(raw)
            await resp.write_eof()
            return resp
        data = json.loads(raw)
        if "status" in data:
            return web.Response(status=data["status"], headers=data["headers"],
                                body=json.dumps(data["body"]).encode())  # fmt: skip
        return web.Response(body=raw, content_type="application/json")

    return handler, bodies


async def openai_model(loopback_server: Start, *names: str) -> tuple[Model, list[Any]]:
    handler, bodies = served(*names)
    url = await loopback_server([("POST", "/v1/chat/completions", handler)])
    keyed = Settings.load(openai_api_key="k", cache=False)
    return Model(f"openai:gpt-4o-mini@{url}/v1", settings=keyed), bodies


async def test_openai_n_choices_in_one_response(loopback_server: Start) -> None:
    m, bodies = await openai_model(loopback_server, "openai_n3.json")
    async with m:
        c = await m.generate("What is 17 + 25?", n=3, temperature=0.8)
    assert [b["n"] for b in bodies] == [3]  # one request for the three samples
    assert [(ch.index, ch.finish_reason) for ch in c.choices] == [
        (0, "stop"), (1, "stop"), (2, "length"),
    ]  # fmt: skip
    assert c.choices[1].text == "Adding them gives 42."
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (19, 27)


async def test_openai_logprobs_with_their_alternatives(loopback_server: Start) -> None:
    m, bodies = await openai_model(loopback_server, "openai_logprobs.json")
    async with m:
        c = await m.generate("2 + 2?", logprobs=True, top_logprobs=2)
    assert (bodies[0]["logprobs"], bodies[0]["top_logprobs"]) == (True, 2)
    lp = c.choices[0].logprobs
    assert lp is not None
    assert [t.token for t in lp] == ["4", "."]
    assert lp[0].top == (("4", -0.0000233), ("Four", -10.75))
    assert c.choices[0].mean_logprob == pytest.approx((-0.0000233 - 0.31326) / 2)


async def test_openai_streamed_usage_arrives_after_the_finish(loopback_server: Start) -> None:
    """With ``stream_options.include_usage`` the usage comes in a last chunk with no
    choices, after the finish reason; the last piece carries both."""
    m, bodies = await openai_model(loopback_server, "openai_stream_usage.txt")
    async with m:
        pieces = [chunk async for chunk in m.stream("What is 17 + 25?")]
        text: list[str] = []
        c = await m.generate_streamed("What is 17 + 25?", text.append)
    assert bodies[0]["stream_options"] == {"include_usage": True}
    assert "".join(p.text for p in pieces) == "The answer is 42."
    last = pieces[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (21, 6)
    assert all(p.usage is None for p in pieces[:-1])
    assert ("".join(text), c.usage.completion_tokens) == ("The answer is 42.", 6)
    assert m.meter.usage.completion_tokens == 12  # both calls accounted


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_429_with_retry_after_is_waited_out_then_retried(
    loopback_server: Start, stream: bool
) -> None:
    """A 429 as OpenAI sends it: the endpoint pauses for its ``retry-after`` (every
    request to it waits) and the call is retried, by the one retry path that plain and
    streamed calls share."""
    ok = "openai_stream_usage.txt" if stream else "openai_n3.json"
    m, bodies = await openai_model(loopback_server, "openai_429.json", ok)
    async with m:
        if stream:
            c = await m.generate_streamed("What is 17 + 25?", lambda _: None)
        else:
            c = await m.generate("What is 17 + 25?")
    assert len(bodies) == 2
    assert c.text in ("The answer is 42.", "17 + 25 = 42. The answer is 42.")
    assert m.meter.retries == 1
    assert m.pool.endpoints[0].rate.pauses >= 1  # retry-after, and x-ratelimit-remaining 0


@pytest.mark.parametrize("name", ["openai_429.json", "anthropic_429.json"])
async def test_a_429_that_outlasts_the_retries_names_the_limit_and_the_wait(
    loopback_server: Start, name: str
) -> None:
    from ponder import RetryPolicy
    from ponder.errors import RateLimitError

    handler, bodies = served(name)
    anthropic = name.startswith("anthropic")
    path = "/v1/messages" if anthropic else "/v1/chat/completions"
    url = await loopback_server([("POST", path, handler)])
    ref = f"anthropic:claude-sonnet-4-5@{url}" if anthropic else f"openai:gpt-4o-mini@{url}/v1"
    no_retry = RetryPolicy(max_retries=0)
    keyed = Settings.load(openai_api_key="k", anthropic_api_key="k", cache=False)
    async with Model(ref, settings=keyed, retry=no_retry) as m:
        with pytest.raises(RateLimitError) as err:
            await m.generate("hi")
    assert err.value.retry_after == 1.0
    assert "rate limit" in str(err.value).lower()
    assert len(bodies) == 1
