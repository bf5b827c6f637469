"""Hostile or broken input at the edge: workflow files, model references, memory stores.
Each gets a clear error (file:line where there is one), quickly, in bounded memory."""

from __future__ import annotations

import resource
import sqlite3
import time
from pathlib import Path

import pytest

from ponder import ConfigurationError, ModelRef
from ponder.workflows import WorkflowError, load_spec
from ponder.workflows._yaml import MAX_DEPTH, MAX_FILE_BYTES

BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def test_a_yaml_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path: Path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    assert len(BOMB) < 1000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(WorkflowError, match=r"bomb.yaml:2: .*aliases \(\*name\) are not allowed"):
        load_spec(f)
    assert time.perf_counter() - t < 1.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50


def test_oversized_and_deeply_nested_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    t = time.perf_counter()
    with pytest.raises(WorkflowError, match="a workflow file has at most"):
        load_spec(big)
    assert time.perf_counter() - t < 1.0
    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n")
    with pytest.raises(WorkflowError, match=f"deep.yaml:1: .*nested deeper than {MAX_DEPTH}"):
        load_spec(deep)


def test_a_file_that_is_not_utf8_gets_its_line(tmp_path: Path) -> None:
    f = tmp_path / "latin.yaml"
    f.write_bytes(b"name: ok\nmodels:\n  m: vllm:caf\xe9@http://127.0.0.1:1/v1\n")
    with pytest.raises(WorkflowError, match=r"latin.yaml:3: .*not UTF-8 text \(byte 0xe9\)"):
        load_spec(f)


@pytest.mark.parametrize(
    "ref",
    [
        "vllm:x@127.0.0.1:18000/v1",
        "vllm:x@file:///etc/passwd",
        "vllm:x@ftp://example.com/v1",
        "vllm:x@localhost:8000",
        "vllm:x@http://127.0.0.1:1/v1,gopher://h/",
    ],
)
def test_an_endpoint_that_is_not_an_http_url_is_refused_with_the_grammar(ref: str) -> None:
    with pytest.raises(ConfigurationError, match=r"is not an http\(s\) URL.*provider:model\[@URL"):
        ModelRef.parse(ref)


def test_names_with_an_at_sign_and_urls_with_credentials_still_parse() -> None:
    assert ModelRef.parse("anthropic:claude@20240620").name == "claude@20240620"
    r = ModelRef.parse("vllm:a@b@http://u:p@h:1/v1")
    assert (r.name, r.base_urls) == ("a@b", ("http://u:p@h:1/v1",))


async def test_a_corrupted_memory_store_gets_a_clear_error(tmp_path: Path) -> None:
    from ponder.memory import SQLiteStore

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 16)
    with pytest.raises(ConfigurationError, match=r"is unreadable .*Restore it from an export"):
        SQLiteStore(junk)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE cheatsheets (x TEXT)")
    store = SQLiteStore(foreign)
    with pytest.raises(ConfigurationError, match=r"is unreadable .*not a Ponder memory store"):
        await store.history("ns")


def test_the_memory_cli_reports_a_broken_store_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ponder.apps.cli import main

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE cheatsheets (x TEXT)")
    for cmd in (["memory", "history", "ns"], ["memory", "export", "ns"]):
        assert main([*cmd, "--store", str(foreign)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "unreadable" in err


def test_control_characters_in_a_workflow_file_are_one_line_errors(tmp_path: Path) -> None:
    from ponder.apps.cli import main

    for n, char in enumerate(["\x00", "\x1b", "\ufffe", "\x07"]):
        path = tmp_path / f"wf{n}.yaml"
        path.write_text(
            f"name: x\nmodels: [local:smollm2]\nlayers:\n  - generate: {{n: 2}}{char}\n"
        )
        with pytest.raises(WorkflowError) as e:
            load_spec(path)
        text = str(e.value)
        assert f"{path}:4" in text
        assert f"U+{ord(char):04X}" in text
        assert "\n" not in text.strip()
        assert main(["validate", str(path)]) == 1


def test_every_memory_command_refuses_a_damaged_store_with_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from ponder.apps.cli import main

    export = tmp_path / "export.json"
    export.write_text(json.dumps({"namespace": "ns", "versions": [
        {"version": 1, "content": "a strategy", "note": "n1", "created": 1.0},
        {"version": 2, "content": "another one", "note": "n2", "created": 2.0}]}))  # fmt: skip
    good = tmp_path / "good.sqlite"
    assert main(["memory", "import", str(export), "--store", str(good)]) == 0
    data = good.read_bytes()
    damaged = {
        "truncated": data[: len(data) * 2 // 3],
        "zeroed page": data[:4096] + bytes(4096) + data[8192:],
        "garbage": data[:100] + bytes(range(256)) * 4 + data[1124:],
    }
    commands = [
        ["memory", "import", str(export)],
        ["memory", "rollback", "ns", "1"],
        ["memory", "export", "ns"],
        ["memory", "history", "ns"],
    ]
    capsys.readouterr()
    for name, content in damaged.items():
        for cmd in commands:
            store = tmp_path / f"{name.replace(' ', '_')}-{cmd[1]}.sqlite"
            store.write_bytes(content)
            assert main([*cmd, "--store", str(store)]) == 1, (name, cmd)
            err = capsys.readouterr().err.strip()
            assert "Traceback" not in err
            assert len(err.splitlines()) == 1, err
            assert "memory store" in err


async def test_an_api_key_quoted_by_an_upstream_error_never_leaves_ponder(
    chat_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    from aiohttp import web

    from ponder import BadRequestError, Model, Settings

    key = "sk-ponder-test-9f8e7d6c5b4a"

    async def quoting(request: web.Request) -> web.Response:
        got = request.headers.get("Authorization", "")
        return web.json_response({"error": {"message": f"bad request from {got}"}}, status=400)

    base = await chat_server(quoting)  # type: ignore[operator]
    settings = Settings.load(openai_api_key=key, cache=False, max_retries=0)
    async with Model(f"openai:gpt-test@{base}", settings=settings, cache=False) as model:
        with pytest.raises(BadRequestError) as e:
            await model.generate("hi")
    assert key not in str(e.value)
    assert "[redacted]" in str(e.value)
    import logging

    logging.getLogger("ponder").warning("upstream said %s", f"key={key}")
    assert key not in caplog.text


async def test_a_server_that_trickles_its_headers_fails_at_the_headers_deadline() -> None:
    """One byte every 0.1 s resets the per-read timer forever; the headers deadline does
    not move, and such a stall is not retried."""
    import asyncio

    from ponder import Model, RequestTimeout, Settings

    connections = 0
    handlers: list[asyncio.Task[None] | None] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        handlers.append(asyncio.current_task())
        await reader.readuntil(b"\r\n\r\n")
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings.load(
        cache=False, headers_timeout=1.5, first_byte_timeout=0.5, retry_initial=0.01
    )
    model = Model(f"vllm:m@http://127.0.0.1:{port}/v1", settings=settings, cache=False)
    try:
        with pytest.raises(RequestTimeout, match="PONDER_HEADERS_TIMEOUT"):
            await model.generate("hi")
    finally:
        for task in handlers:
            if task is not None:
                task.cancel()
        server.close()
        await server.wait_closed()
        await model.aclose()
    assert connections == 1  # a stall is not retried
