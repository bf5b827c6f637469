"""A real OpenAI-compatible server that no one here wrote: llama-cpp-python's own server
(``python -m llama_cpp.server``), started on a free port with the SmolLM2 fixture.

What it supports, and how the ``llama_cpp_python:`` preset meets it: one choice per
request (``n`` is fanned out), a schema only as ``{"type": "json_object", "schema": ...}``
(``json_schema`` is an HTTP 500 there), no prefill (a trailing assistant message starts a
new turn: refused before sending), no tool API (tools go as constrained JSON), and its
request-validation errors arrive as HTTP 500 (not retried)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from ponder import BadRequestError, ConfigurationError, Model
from ponder.backends._local import resolve_model_path
from ponder.tools import calculator_tool

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server extra is missing")
pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model_path("smollm2")),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
           "--seed", "0"]  # fmt: skip
    log = tmp_path_factory.mktemp("llama") / "server.log"  # its loading log is long
    base = f"http://127.0.0.1:{port}/v1"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-cpp-python's server exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/models", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"llama-cpp-python's server did not start: {log.read_text()[-2000:]}"
                    )
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


class Sum(BaseModel):
    answer: int


async def test_text_n_and_streaming(server: str) -> None:
    async with Model(f"llama_cpp_python:smollm2@{server}", cache=False) as m:
        c = await m.generate("Say hello.", max_tokens=8, temperature=0)
        assert c.text
        assert c.usage.completion_tokens > 0
        three = await m.generate("Name a colour.", n=3, max_tokens=6, seed=1)
        assert len(three.choices) == 3  # one choice per request: fanned out
        assert three.requests == 3
        pieces: list[str] = []
        s = await m.generate_streamed("Count to three.", pieces.append, max_tokens=12, seed=2)
        assert len(pieces) > 1
        assert "".join(pieces) == s.text


async def test_typed_output_on_both_llama_cpp_presets(server: str) -> None:
    """The schema goes as json_object + schema, which this server enforces with a grammar:
    the 135M model's reply validates (as json_schema it was an HTTP 500)."""
    for preset in ("llama_cpp_python", "llamacpp"):
        async with Model(f"{preset}:smollm2@{server}", cache=False) as m:
            value = await m.parse("What is 7 + 5?", Sum, max_tokens=20, temperature=0)
            assert isinstance(value.answer, int)


async def test_prefill_is_refused_before_anything_is_sent(server: str) -> None:
    async with Model(f"llama_cpp_python:smollm2@{server}", cache=False) as m:
        with pytest.raises(ConfigurationError, match="cannot continue a partial answer"):
            await m.generate("Say hello", prefill="Hello there,")
    # the llamacpp: preset (llama.cpp's llama-server) asks the server first: this one has
    # no /props, so it is not llama-server, and its answer would not continue the prefill
    async with Model(f"llamacpp:smollm2@{server}", cache=False) as m:
        with pytest.raises(ConfigurationError, match=r"not llama\.cpp's llama-server"):
            await m.generate("Say hello", prefill="Hello there,")


async def test_a_validation_error_sent_as_500_is_not_retried(server: str) -> None:
    raw = {"response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {}}}}
    async with Model(f"llama_cpp_python:smollm2@{server}", cache=False) as m:
        with pytest.raises(BadRequestError, match="the error is the request's") as e:
            await m.generate("hi", max_tokens=4, extra=raw)
        assert "Input should be 'text' or 'json_object'" in str(e.value)
        assert m.meter.requests == 1
        assert m.meter.retries == 0


async def test_tools_go_as_constrained_json_and_come_back_as_calls(server: str) -> None:
    calc = calculator_tool()
    async with Model(f"llama_cpp_python:smollm2@{server}", cache=False) as m:
        c = await m.generate(
            "What is 12 * 11? Use the calculator.",
            tools=[calc],
            tool_choice="calculator",  # a call is the only reply the grammar allows
            max_tokens=40,
            temperature=0,
        )
    (call,) = c.choices[0].tool_calls
    assert call.name == "calculator"
    assert isinstance(json.loads(call.arguments)["expression"], str)
    assert c.choices[0].finish_reason == "tool_calls"
