"""Memory stores: one conformance suite for in-memory, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from ponder import GenerateParams, Message
from ponder.errors import ConfigurationError
from ponder.memory import (
    Cheatsheet,
    CheatsheetConfig,
    DynamicCheatsheet,
    InMemoryStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    VersionConflict,
    export_namespace,
    import_namespace,
    parse_cheatsheet,
    rollback,
    update,
)
from ponder.testing import FakeModel


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port (installed by .ci/run / ./dev test)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: apt-get install redis-server (./dev test does)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


StoreMaker = Callable[[], MemoryStore]


@pytest_asyncio.fixture(params=["memory", "sqlite", "redis"])
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
) -> AsyncIterator[StoreMaker]:
    """Makes stores that share one backend (separate connections), as separate workers do."""
    made: list[MemoryStore] = []
    shared = InMemoryStore()
    prefix = f"test:{request.node.name}:{time.time_ns()}"

    def make() -> MemoryStore:
        store: MemoryStore
        if request.param == "memory":
            store = shared
        elif request.param == "sqlite":
            store = SQLiteStore(tmp_path / "memory.sqlite")
        else:
            store = RedisStore(redis_url, prefix=prefix)
        made.append(store)
        return store

    yield make
    for s in made:
        await s.aclose()


async def test_versions_grow_and_compare_and_set_refuses_stale_writes(
    make_store: StoreMaker,
) -> None:
    store = make_store()
    assert await store.latest("ns") is None
    v1 = await store.put("ns", "first", expected_version=0, note="start")
    assert (v1.version, v1.content, v1.note) == (1, "first", "start")
    v2 = await store.put("ns", "second", expected_version=1)
    assert v2.version == 2
    with pytest.raises(VersionConflict, match="is at version 2, not 1"):
        await store.put("ns", "stale", expected_version=1)
    latest = await store.latest("ns")
    assert latest is not None
    assert (latest.version, latest.content) == (2, "second")
    assert [c.content for c in await store.history("ns")] == ["first", "second"]
    assert await store.namespaces() == ["ns"]


async def test_namespaces_are_isolated(make_store: StoreMaker) -> None:
    store = make_store()
    await store.put("a", "x", expected_version=0)
    await store.put("b", "y", expected_version=0)
    a, b = await store.latest("a"), await store.latest("b")
    assert a is not None
    assert b is not None
    assert (a.content, b.content) == ("x", "y")
    assert await store.namespaces() == ["a", "b"]


async def test_rollback_adds_a_version_and_keeps_history(make_store: StoreMaker) -> None:
    store = make_store()
    for i in range(3):
        await store.put("ns", f"v{i + 1}", expected_version=i)
    back = await rollback(store, "ns", 1)
    assert (back.version, back.content, back.note) == (4, "v1", "rollback to version 1")
    assert len(await store.history("ns")) == 4
    with pytest.raises(ConfigurationError, match="has no version 9"):
        await rollback(store, "ns", 9)


async def test_export_and_import_round_trip(make_store: StoreMaker) -> None:
    store = make_store()
    await store.put("ns", "one", expected_version=0, note="a")
    await store.put("ns", "two", expected_version=1, note="b")
    data = json.loads(json.dumps(await export_namespace(store, "ns")))
    last = await import_namespace(store, data, namespace="copy")
    assert last is not None
    assert [c.content for c in await store.history("copy")] == ["one", "two"]
    assert [c.note for c in await store.history("copy")] == ["a", "b"]
    with pytest.raises(ConfigurationError, match="list of 'versions'"):
        await import_namespace(store, {"namespace": "x"})


async def test_parallel_writers_lose_nothing_and_apply_nothing_twice(
    make_store: StoreMaker,
) -> None:
    writers = 24

    async def writer(i: int) -> None:
        store = make_store()  # its own connection, like another process

        async def add(current: Cheatsheet | None) -> str:
            lines = current.content.splitlines() if current else []
            await asyncio.sleep(0.001 * (i % 3))  # widen the race window
            return "\n".join([*lines, f"entry {i}"])

        await update(store, "shared", add, note=f"writer {i}")

    await asyncio.gather(*(writer(i) for i in range(writers)))
    store = make_store()
    latest = await store.latest("shared")
    assert latest is not None
    entries = latest.content.splitlines()
    assert sorted(entries) == sorted(f"entry {i}" for i in range(writers))  # none lost
    assert len(entries) == len(set(entries))  # none applied twice
    history = await store.history("shared")
    assert [c.version for c in history] == list(range(1, writers + 1))


async def test_unreachable_redis_names_the_url() -> None:
    store = RedisStore(f"redis://127.0.0.1:{_free_port()}/0")
    with pytest.raises(ConfigurationError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        await store.latest("ns")
    await store.aclose()


def test_unwritable_sqlite_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="cannot open the memory store"):
        SQLiteStore(blocker / "memory.sqlite")


def test_memory_cli_show_history_rollback_export_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ponder.apps.cli import main

    db = str(tmp_path / "m.sqlite")

    async def seed() -> None:
        store = SQLiteStore(db)
        await store.put("g24", "strategy one", expected_version=0, note="curated")
        await store.put("g24", "strategy two", expected_version=1, note="curated")

    asyncio.run(seed())
    assert main(["memory", "show", "--store", db]) == 0
    assert capsys.readouterr().out.strip() == "g24"
    assert main(["memory", "show", "g24", "--store", db]) == 0
    assert "strategy two" in capsys.readouterr().out
    assert main(["memory", "history", "g24", "--store", db]) == 0
    assert "curated" in capsys.readouterr().out
    assert main(["memory", "rollback", "g24", "1", "--store", db]) == 0
    assert "v3 (= v1)" in capsys.readouterr().out
    assert main(["memory", "export", "g24", "--store", db]) == 0
    exported = tmp_path / "g24.json"
    exported.write_text(capsys.readouterr().out)
    other = str(tmp_path / "other.sqlite")
    assert main(["memory", "import", str(exported), "--store", other]) == 0
    assert "g24 is at v3" in capsys.readouterr().out
    assert main(["memory", "show", "nope", "--store", db]) == 1
    assert "no cheatsheet named 'nope'" in capsys.readouterr().err


# -- Dynamic Cheatsheet (cumulative) ------------------------------------------------------------


def _scripted(curator_reply: Callable[[str], str]) -> FakeModel:
    def respond(messages: Sequence[Message], _p: GenerateParams, _i: int) -> str:
        system = messages[0].content if messages and messages[0].role == "system" else ""
        if "You curate a cheatsheet" in system:
            return curator_reply(messages[-1].content)
        return "Using the cheatsheet. The answer is \\boxed{24}."

    return FakeModel(respond)


async def test_cumulative_cheatsheet_grows_and_is_used_next_time(tmp_path: Path) -> None:
    def curator(prompt: str) -> str:
        old = parse_cheatsheet(prompt) or ""
        lines = [] if old == "(empty)" else old.splitlines()
        return (
            "<cheatsheet>\n"
            + "\n".join([*lines, f"- insight {len(lines) + 1}"])
            + "\n</cheatsheet>"
        )

    model = _scripted(curator)
    store = SQLiteStore(tmp_path / "m.sqlite")
    dc = DynamicCheatsheet(model, store, CheatsheetConfig(namespace="g24"))
    first = await dc.answer("Use 1 2 3 4 to make 24.")
    second = await dc.answer("Use 2 3 4 5 to make 24.")
    assert (first.used_version, first.curated_version) == (0, 1)
    assert (second.used_version, second.curated_version) == (1, 2)
    latest = await store.latest("g24")
    assert latest is not None
    assert latest.content == "- insight 1\n- insight 2"
    # the second answer saw the first curated cheatsheet in its system prompt
    prompts = [
        c.messages[0].content for c in model.calls if "Solve the problem" in c.messages[0].content
    ]
    assert "- insight 1" in prompts[1]
    assert latest.note.startswith("curated after: Use 2 3 4 5")


async def test_bad_curator_output_keeps_the_previous_version(tmp_path: Path) -> None:
    store = InMemoryStore()
    await store.put("ns", "- keep me", expected_version=0)
    dc = DynamicCheatsheet(
        _scripted(lambda _p: "I think it is fine."), store, CheatsheetConfig(namespace="ns")
    )
    r = await dc.answer("q")
    assert r.curated_version is None
    assert "no <cheatsheet> block" in r.curation_note
    latest = await store.latest("ns")
    assert latest is not None
    assert (latest.version, latest.content) == (1, "- keep me")


async def test_an_oversized_cheatsheet_is_compacted_or_kept(tmp_path: Path) -> None:
    long = "- " + "x" * 400

    def compacting(prompt: str) -> str:
        return (
            "<cheatsheet>- short</cheatsheet>"
            if "Compact it" in prompt
            else f"<cheatsheet>{long}</cheatsheet>"
        )

    store = InMemoryStore()
    cfg = CheatsheetConfig(namespace="ns", max_chars=200)
    ok = await DynamicCheatsheet(_scripted(compacting), store, cfg).answer("q")
    assert ok.curated_version == 1
    latest = await store.latest("ns")
    assert latest is not None
    assert latest.content == "- short"
    stubborn = await DynamicCheatsheet(
        _scripted(lambda _p: f"<cheatsheet>{long}</cheatsheet>"), store, cfg
    ).answer("q2")
    assert stubborn.curated_version is None
    assert "over 200 characters" in stubborn.curation_note
    assert (await store.latest("ns")) == latest  # never cut mid-entry


async def test_concurrent_curators_keep_every_insight(tmp_path: Path) -> None:
    def curator(prompt: str) -> str:
        old = parse_cheatsheet(prompt) or "(empty)"
        lines = [] if old == "(empty)" else old.splitlines()
        problem = prompt.split("Problem: ", 1)[1].split("\n", 1)[0]
        return "<cheatsheet>\n" + "\n".join([*lines, f"- from {problem}"]) + "\n</cheatsheet>"

    path = tmp_path / "m.sqlite"

    async def worker(i: int) -> None:
        dc = DynamicCheatsheet(
            _scripted(curator), SQLiteStore(path), CheatsheetConfig(namespace="ns")
        )
        await dc.answer(f"puzzle {i}")

    await asyncio.gather(*(worker(i) for i in range(8)))
    latest = await SQLiteStore(path).latest("ns")
    assert latest is not None
    assert sorted(latest.content.splitlines()) == sorted(f"- from puzzle {i}" for i in range(8))


async def test_no_memory_baseline_reads_and_writes_nothing() -> None:
    store = InMemoryStore()
    dc = DynamicCheatsheet(
        _scripted(lambda _p: "<cheatsheet>- x</cheatsheet>"),
        store,
        CheatsheetConfig(variant="none"),
    )
    r = await dc.answer("q")
    assert (r.used_version, r.curated_version, r.curation_note) == (0, None, "no memory")
    assert await store.namespaces() == []
