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
    with pytest.raises(ConfigurationError, match="cannot open the memory store"):
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
