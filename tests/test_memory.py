"""Memory stores: one conformance suite for in-memory, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import free_port

from ponder import GenerateParams, Message, Model, Settings
from ponder.errors import ConfigurationError
from ponder.eval import check_24, extract_expression, load_game24
from ponder.memory import (
    BM25Retriever,
    Cheatsheet,
    CheatsheetConfig,
    DynamicCheatsheet,
    EmbeddingRetriever,
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
from ponder.testing import FakeModel, StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, solve24_expression
from ponder.workflows import Workflow, WorkflowError, WorkflowSpec

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
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
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


# -- retrieval, DC-RS and the baselines ---------------------------------------------------------


def test_bm25_ranks_by_shared_words_and_finds_nothing_unrelated() -> None:
    docs = ["Game of 24: 4 7 8 8", "Game of 24: 1 1 4 6", "What is 3 * 4 + 2?"]
    r = BM25Retriever()
    assert r.search("Game of 24: 8 4 8 7", docs, 2)[0] == 0
    assert r.search("zebra", docs, 2) == []
    assert r.search("anything", [], 3) == []


def test_embedding_retriever_runs_the_bundled_model_offline() -> None:
    docs = ["How do I bake bread?", "Solve 3x + 2 = 11 for x.", "The cat sat on the mat."]
    r = EmbeddingRetriever()
    assert r.search("Find x when 5x - 4 = 6.", docs, 1) == [1]
    assert r.search("A recipe for sourdough loaves", docs, 3)[0] == 0


def test_embedding_retriever_with_a_missing_model_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        EmbeddingRetriever(tmp_path / "nope").search("q", ["d"], 1)


def _recording(curator_reply: Callable[[str], str]) -> FakeModel:
    def respond(messages: Sequence[Message], _p: GenerateParams, _i: int) -> str:
        system = messages[0].content if messages and messages[0].role == "system" else ""
        if "You curate a cheatsheet" in system:
            return curator_reply(messages[-1].content)
        question = messages[-1].content
        return f"Answer to {question}: \\boxed{{{len(question)}}}"

    return FakeModel(respond)


async def test_retrieval_synthesis_builds_a_sheet_from_similar_past_queries() -> None:
    seen: list[str] = []

    def synth(prompt: str) -> str:
        seen.append(prompt)
        nxt = prompt.split("Next problem: ", 1)[1].split("\n", 1)[0]
        return f"<cheatsheet>\n- synthesised for {nxt}\n</cheatsheet>"

    store = InMemoryStore()
    model = _recording(synth)
    cfg = CheatsheetConfig(namespace="rs", variant="retrieval_synthesis", top_k=1)
    dc = DynamicCheatsheet(model, store, cfg)
    for q in ["Game of 24: 4 7 8 8", "What is the capital of France?", "Game of 24: 8 8 7 4"]:
        r = await dc.answer(q)
    # the third query retrieved the first (shared numbers), not the unrelated one
    assert [e.query for e in r.retrieved] == ["Game of 24: 4 7 8 8"]
    assert "Q: Game of 24: 4 7 8 8" in seen[-1]
    assert "Next problem: Game of 24: 8 8 7 4" in seen[-1]
    # the sheet was written before answering and the generator saw it
    assert r.used_version == 3
    assert r.curation_note == "synthesised; recorded"
    assert "- synthesised for Game of 24: 8 8 7 4" in model.calls[-1].messages[0].content
    assert len(await dc.log.entries()) == 3


async def test_retrieval_and_full_history_baselines_show_past_answers() -> None:
    store = InMemoryStore()
    never = _recording(lambda _p: pytest.fail("baselines never curate"))
    history = DynamicCheatsheet(
        never, store, CheatsheetConfig(namespace="h", variant="full_history")
    )
    await history.answer("first question")
    await history.answer("second question")
    system = never.calls[-1].messages[0].content
    assert "Q: first question" in system
    assert "A: Answer to first question" in system
    retrieval = DynamicCheatsheet(
        never, store, CheatsheetConfig(namespace="h", variant="retrieval", top_k=1)
    )
    r = await retrieval.answer("the second question again")
    assert [e.query for e in r.retrieved] == ["second question"]
    assert await store.latest("h") is None  # baselines write no cheatsheet, only the log
    assert len(await history.log.entries()) == 3


async def test_a_failed_synthesis_answers_with_the_previous_sheet() -> None:
    store = InMemoryStore()
    await store.put("rs", "- kept", expected_version=0)
    dc = DynamicCheatsheet(
        _recording(lambda _p: "I refuse to use tags."),
        store,
        CheatsheetConfig(namespace="rs", variant="retrieval_synthesis"),
    )
    r = await dc.answer("q")
    assert r.used_version == 1
    assert "no <cheatsheet> block" in r.curation_note
    assert (await store.latest("rs")) is not None


# -- code in memory, on the stand-in oracle -------------------------------------------------------

G24_ORACLE = OracleConfig(
    accuracy={"g": 0.0},
    curator_insight_rate=1.0,
    solver_after=1,
    solver_rate=1.0,
)


async def test_a_solver_the_curator_stored_is_run_by_later_answers(tmp_path: Path) -> None:
    puzzles = load_game24(0, 3)
    async with StandinServer(StandinConfig(time_scale=0, oracle=G24_ORACLE)) as s:
        model = Model(f"vllm:g@{s.base_url}", settings=Settings.load(cache=False))
        dc = DynamicCheatsheet(
            model, SQLiteStore(tmp_path / "m.sqlite"), CheatsheetConfig(execute_code=True)
        )
        results = [await dc.answer(p.question) for p in puzzles]
        await model.aclose()
    first, second, _ = results
    assert first.code_output is None
    assert not check_24(extract_expression(first.answer_text), puzzles[0].numbers)
    assert first.curated_version == 1  # the curator added an insight and the solver
    assert second.code_output is not None
    assert "def solve24" in second.answer_text
    assert check_24(second.code_output, puzzles[1].numbers)
    assert all(
        check_24(extract_expression(r.answer_text), p.numbers)
        for r, p in zip(results[1:], puzzles[1:], strict=True)
    )


async def test_code_that_hangs_is_stopped_and_the_answer_still_comes() -> None:
    def respond(messages: Sequence[Message], _p: GenerateParams, _i: int) -> str:
        if "Your code printed" in messages[-1].content:
            return "It timed out, so I guess: \\boxed{0}"
        if "You curate" in messages[0].content:
            return "<cheatsheet>- avoid infinite loops</cheatsheet>"
        return "```python\nwhile True:\n    pass\n```"

    dc = DynamicCheatsheet(
        FakeModel(respond),
        InMemoryStore(),
        CheatsheetConfig(execute_code=True, code_timeout=0.5),
    )
    r = await dc.answer("loop forever")
    assert r.code_output is not None
    assert "stopped" in r.code_output
    assert r.answer_text.endswith("\\boxed{0}")
    assert r.curated_version == 1


# -- workflow steps ---------------------------------------------------------------------------


async def test_memory_steps_wrap_a_workflow(tmp_path: Path) -> None:
    store = str(tmp_path / "wf.sqlite")
    spec = {
        "name": "with-memory",
        "models": {"m": "vllm:m@http://127.0.0.1:9/v1"},
        "layers": [
            {"memory_read": {"namespace": "wf", "store": store}},
            {"generate": {"n": 3}},
            {"vote": {}},
            {"memory_curate": {"namespace": "wf", "store": store}},
        ],
    }

    def respond(messages: Sequence[Message], _p: GenerateParams, _i: int) -> str:
        if "You curate" in messages[0].content:
            old = parse_cheatsheet(messages[-1].content) or ""
            return f"<cheatsheet>{old}\n- learned</cheatsheet>"
        return "\\boxed{7}"

    fake = FakeModel(respond)
    wf = Workflow(WorkflowSpec.model_validate(spec), models={"m": fake})
    first = (await wf.arun("What is 3 + 4?")).output
    second = (await wf.arun("What is 2 + 5?")).output
    assert first.final == second.final == "7"
    assert any("memory wf v0 (cumulative)" in n for n in first.notes)
    assert any("memory wf v1 (cumulative)" in n for n in second.notes)
    assert any("memory wf: updated (v2)" in n for n in second.notes)
    gen = [c for c in fake.calls if "You curate" not in c.messages[0].content]
    assert "- learned" in gen[-1].messages[0].content
    with pytest.raises(WorkflowError, match="variant"):
        Workflow(
            WorkflowSpec.model_validate(
                {**spec, "layers": [{"memory_read": {"variant": "telepathy"}}]}
            ),
            models={"m": fake},
        )


async def test_a_workflows_memory_store_is_its_engines(tmp_path: Path) -> None:
    """A memory step's store is opened once by the workflow's engine (shared by every run
    and step that names it) and closed with the engine; an in-process ``memory:NAME``
    store lives as long as its engine, not the process."""
    from ponder import Settings
    from ponder.engine import Engine

    def spec(store: str) -> WorkflowSpec:
        return WorkflowSpec.model_validate({
            "models": {"m": "vllm:m@http://127.0.0.1:9/v1"},
            "layers": [{"memory_read": {"namespace": "n", "store": store}}, {"generate": {}},
                       {"memory_curate": {"namespace": "n", "store": store}}],
        })  # fmt: skip

    def respond(messages: Sequence[Message], _p: GenerateParams, _i: int) -> str:
        if "You curate" in messages[0].content:
            return "<cheatsheet>- noted</cheatsheet>"
        return "\\boxed{1}"

    def _never() -> MemoryStore:
        raise AssertionError("the store was opened twice")

    path = str(tmp_path / "mem.sqlite")
    async with Engine(Settings.load(cache=False)) as engine:
        wf = Workflow(spec(path), models={"m": FakeModel(respond)}, engine=engine)
        await wf.arun("q1")
        store: MemoryStore = engine.resource(("memory-store", path), _never)
        await wf.arun("q2")
        assert (await store.latest("n")) is not None  # the runs wrote through it
        mem = Workflow(spec("memory:shared"), models={"m": FakeModel(respond)}, engine=engine)
        await mem.arun("q3")
        second = await mem.arun("q4")
        assert any("memory n v1" in note for note in second.output.notes)
    assert engine._resources == {}  # closed with its engine
    async with Engine(Settings.load(cache=False)) as other:
        fresh = Workflow(spec("memory:shared"), models={"m": FakeModel(respond)}, engine=other)
        first = await fresh.arun("q5")
        assert any("memory n v0" in note for note in first.output.notes)


# -- Game of 24 data and checker ------------------------------------------------------------


def test_game24_data_and_checker() -> None:
    puzzles = load_game24()
    assert len(puzzles) == 1362
    assert puzzles[0].numbers == (1, 1, 4, 6)
    assert check_24("(7 - 8/8) * 4", (4, 7, 8, 8))
    assert check_24("8 / (3 - 8/3)", (3, 3, 8, 8))  # exact fractions, no rounding
    assert not check_24("6 * 4", (1, 1, 4, 6))  # must use every number
    assert not check_24("__import__('os')", (1, 1, 4, 6))
    assert not check_24("1/(1-1)*4*6", (1, 1, 4, 6))
    assert extract_expression("so \\boxed{(1+1)*...}") == "(1+1)*..."
    assert extract_expression("work\n(6 - 1 - 1) * 4 = 24") == "(6 - 1 - 1) * 4"
    assert extract_expression("no expression here") is None
    # the stand-in oracle's solver (and the solver code its curator stores) is exact
    for p in puzzles[::7]:
        assert check_24(solve24_expression(tuple(sorted(p.numbers))), p.numbers), p
