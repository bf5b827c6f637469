"""The providers' own payloads (tests/payloads/) through Ponder's wires: parallel tool
calls, streamed tool-call pieces (OpenAI's and Ollama's way), Anthropic's tool_use
blocks and their input_json_delta stream."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ponder import Model

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
