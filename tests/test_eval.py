"""``ponder eval``: datasets offline, scorers, resumable concurrent runs, summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ponder import Settings
from ponder.apps.cli import main
from ponder.errors import ConfigurationError
from ponder.eval import (
    AsyncScorer,
    Dataset,
    Item,
    evaluate,
    load_dataset,
    load_jsonl,
    pass_at_k,
    read_results,
    summarize,
    wilson,
)
from ponder.eval._datasets import CodeScorer
from ponder.testing import StandinConfig, StandinServer
from ponder.workflows import Workflow, WorkflowSpec

ROOT = Path(__file__).parent.parent


def sync_score(ds: Dataset, item: Item, answer: str | None, text: str) -> bool:
    assert not isinstance(ds.scorer, AsyncScorer)
    return ds.scorer(item, answer, text)


def test_intervals_and_unbiased_pass_at_k() -> None:
    lo, hi = wilson(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    assert wilson(0, 0) == (0.0, 0.0)
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)


def test_jsonl_rows_without_answers_are_reported_and_bad_lines_named(tmp_path: Path) -> None:
    good = tmp_path / "qa.jsonl"
    good.write_text(
        '{"id": "a", "question": "1+1?", "answer": "2"}\n'
        '{"id": "b", "question": "2+2?"}\n'
        '{"question": "3+3?", "answer": 6}\n'
    )
    ds = load_jsonl(good)
    assert [i.id for i in ds.items] == ["a", "3"]
    assert ds.skipped == ["qa.jsonl:2 (id b): no 'answer' field; skipped"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "answer": "1"}\n{oops\n')
    with pytest.raises(ConfigurationError, match=r"bad\.jsonl:2: not a JSON value"):
        load_jsonl(bad)
    with pytest.raises(ConfigurationError, match="unknown dataset"):
        load_dataset("imagenet")


def test_bundled_datasets_load_offline_and_score() -> None:
    g = load_dataset("game24:3")
    assert [i.id for i in g.items] == ["game24:901", "game24:902", "game24:903"]
    item = g.items[0]
    nums = item.meta["numbers"]
    from ponder.testing.oracle import solve24_expression

    assert sync_score(g, item, solve24_expression(tuple(sorted(nums))), "")
    he = load_dataset("humaneval:2")
    assert he.items[0].id == "HumanEval/0"
    rg = load_dataset("rg:basic_arithmetic:3")
    assert sync_score(rg, rg.items[0], rg.items[0].answer, "")
    assert not sync_score(rg, rg.items[0], "not a number", "")
    bank = load_dataset("bank:arithmetic:2")
    assert sync_score(bank, bank.items[0], bank.items[0].answer, "")


def test_humaneval_is_scored_by_running_its_tests() -> None:
    he = load_dataset("humaneval:1")
    item = he.items[0]
    right = (
        "```python\n"
        + item.meta["prompt"]
        + (
            "    for i, a in enumerate(numbers):\n"
            "        for j, b in enumerate(numbers):\n"
            "            if i != j and abs(a - b) < threshold:\n"
            "                return True\n"
            "    return False\n```"
        )
    )
    wrong = "```python\n" + item.meta["prompt"] + "    return False\n```"
    assert isinstance(he.scorer, CodeScorer)
    assert sync_score(he, item, None, right)
    assert not sync_score(he, item, None, wrong)


def _workflow(url: str) -> Workflow:
    spec = WorkflowSpec.model_validate(
        {
            "name": "vote3",
            "models": {"m": f"vllm:strong@{url}"},
            "layers": [{"generate": {"n": 3}}, {"vote": {}}],
        }
    )
    return Workflow(spec, settings=Settings.load(cache=False))


async def test_eval_resumes_without_running_an_item_twice(
    standin: StandinServer, tmp_path: Path
) -> None:
    ds = load_dataset("bank:arithmetic:10")
    out = tmp_path / "r.jsonl"
    first = Dataset(ds.name, ds.items[:4], ds.scorer)
    await evaluate(_workflow(standin.base_url), first, out)
    before = standin.stats.requests
    ran: list[str] = []
    rows = await evaluate(
        _workflow(standin.base_url), ds, out, on_item=lambda r: ran.append(r["id"])
    )
    assert len(ran) == 6  # only the items not in the file
    assert standin.stats.requests - before == 6
    ids = [r["id"] for r in read_results(out)]
    assert sorted(ids) == sorted(i.id for i in ds.items)
    s = summarize(rows)
    assert s.items == 10
    assert s.tokens_per_item > 0
    assert set(s.curve) == {1, 2}
    assert all(len(r["candidates"]) == 3 for r in rows)


async def test_a_crashing_scorer_marks_its_item(standin: StandinServer, tmp_path: Path) -> None:
    class Boom:
        kind = "test"

        def __call__(self, item: Item, answer: str | None, text: str) -> bool:
            if item.id.endswith("4"):
                raise ValueError("bad item")
            return True

    ds = load_dataset("bank:arithmetic:3")
    rows = await evaluate(
        _workflow(standin.base_url), Dataset("x", ds.items, Boom()), tmp_path / "r.jsonl"
    )
    marked = [r for r in rows if r.get("error")]
    assert len(marked) == 1
    assert "scorer failed: ValueError: bad item" in marked[0]["error"]
    assert sum(r["correct"] for r in rows) == 2


def test_cli_eval_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "e.jsonl"
    wf = str(ROOT / "examples" / "workflows" / "adaptive_vote.yaml")
    plot = str(tmp_path / "p.png")
    with StandinServer(StandinConfig(time_scale=0)).in_thread() as s:
        monkeypatch.setenv("PONDER_STANDIN", s.base_url)
        assert main(["eval", wf, "bank:arithmetic:6", "--out", str(out), "--plot", plot]) == 0
    text = capsys.readouterr().out
    assert "adaptive-self-consistency" in text
    assert "95% CI" in text
    assert (tmp_path / "p.png").stat().st_size > 5000
    assert len(out.read_text().splitlines()) == 6
    assert main(["eval-report", str(out)]) == 0
    assert "bank:arithmetic:6" in capsys.readouterr().out
    assert main(["eval-report", str(tmp_path / "none.jsonl")]) == 1
    assert json.loads(out.read_text().splitlines()[0])["workflow"] == "adaptive-self-consistency"


def test_search_finds_a_pareto_front_and_writes_a_runnable_workflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ponder.eval._search import SearchSpace, run_search, write_workflow
    from ponder.workflows import load_workflow

    with StandinServer(StandinConfig(time_scale=0)).in_thread() as s:
        space = SearchSpace(
            models={"weak": f"vllm:weak@{s.base_url}", "strong": f"vllm:strong@{s.base_url}"},
            prices={"weak": (0.1, 0.4), "strong": (2.0, 8.0)},
            samples=[1, 3],
        )
        result = run_search(space, load_dataset("bank:arithmetic:16"), tmp_path, trials=6)
    assert len(result.baselines) == 4
    assert result.pareto
    for t in result.pareto:  # nothing on the front is dominated by another full trial
        assert not any(
            o.accuracy > t.accuracy and o.cost_per_item < t.cost_per_item
            for o in result.trials
            if not o.pruned
        )
    assert result.best is not None
    path = write_workflow(result.best, tmp_path / "best.yaml")
    wf = load_workflow(path)
    assert wf.spec.name == "searched"
    assert wf.spec.models["strong"].price == (2.0, 8.0)
    bad = tmp_path / "space.yaml"
    bad.write_text("models: {}\n")
    assert main(["search", str(bad), "bank:arithmetic:4"]) == 1
    assert "not a valid search space" in capsys.readouterr().err


def test_ray_and_local_runs_give_identical_per_item_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    import asyncio

    import ray

    from ponder.eval import evaluate_ray

    monkeypatch.setenv("PONDER_CACHE", "false")  # both runs really call the model
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
    try:
        with StandinServer(StandinConfig(time_scale=0)).in_thread() as s:
            spec = {
                "name": "vote3",
                "models": {"m": f"vllm:strong@{s.base_url}"},
                "layers": [{"generate": {"n": 3, "seed": 5}}, {"vote": {}}],
            }
            local = asyncio.run(
                evaluate(
                    Workflow(WorkflowSpec.model_validate(spec)),
                    load_dataset("bank:multistep:8"),
                    tmp_path / "local.jsonl",
                )
            )
            remote = evaluate_ray(spec, "bank:multistep:8", tmp_path / "ray.jsonl", batch=3)

            # with PONDER_CACHE_URL the workers share one Redis cache: a second eval of
            # the same items on the cluster generates nothing new
            monkeypatch.setenv("PONDER_CACHE", "true")
            monkeypatch.setenv("PONDER_CACHE_URL", redis_url)
            evaluate_ray(spec, "bank:multistep:8", tmp_path / "fill.jsonl", batch=2)
            generated = s.stats.samples
            again = evaluate_ray(spec, "bank:multistep:8", tmp_path / "again.jsonl", batch=4)
            assert s.stats.samples == generated
    finally:
        ray.shutdown()

    def key(rows: list[dict[str, object]]) -> dict[object, object]:
        return {r["id"]: (r["final"], r["correct"], r["candidates"], r["tokens"]) for r in rows}

    assert len(remote) == 8
    assert key(remote) == key(local)
    assert {r["id"]: r["final"] for r in again} == {r["id"]: r["final"] for r in local}


def test_champ_loads_offline_and_checks_every_marked_form() -> None:
    ds = load_dataset("champ:20")
    assert len(ds.items) == 20
    assert len(load_dataset("champ").items) == 270
    two = next(i for i in ds.items if i.id == "P_Combinatorics_2")
    assert two.meta["forms"] == ["C(10, 5)", "252"]
    assert "\\boxed" in two.question
    assert sync_score(ds, two, "252", "")
    assert sync_score(ds, two, "\\binom{10}{5}", "")
    assert not sync_score(ds, two, "251", "")
    assert not sync_score(ds, two, None, "no answer")


async def test_llm_judge_grades_what_the_checker_rejects_once_per_answer(tmp_path: Path) -> None:
    from ponder.eval import LLMJudge
    from ponder.testing.oracle import OracleConfig

    class Nothing:  # a checker that can parse none of the answers
        kind = "none"

        def __call__(self, item: Item, answer: str | None, text: str) -> bool:
            raise ValueError("unparseable")

    bank = load_dataset("bank:arithmetic:2")
    item = bank.items[0]
    wrong = bank.scorer.bank.problem(int(item.id.split(":")[1])).distractors[0]  # type: ignore[union-attr]
    oracle = OracleConfig(verifier_tpr=1.0, verifier_fpr=0.0)  # a perfect judge
    async with StandinServer(StandinConfig(time_scale=0, oracle=oracle)) as s:
        settings = Settings.load(cache_path=tmp_path / "c.sqlite")
        from ponder import Model

        async with Model(f"vllm:strong@{s.base_url}", settings=settings) as m:
            judge = LLMJudge(m, Nothing())
            assert await judge.ascore(item, item.answer, "")
            assert await judge.ascore(item, item.answer, "other text, same answer")
            assert not await judge.ascore(item, wrong, "")
            assert not await judge.ascore(item, None, "no answer at all")
            assert s.stats.requests == 2  # one judgement per distinct answer
            checked = LLMJudge(m, bank.scorer)  # the checker's wins never reach the judge
            assert await checked.ascore(item, item.answer, "")
            assert s.stats.requests == 2
        # named by reference, the judge's model comes from the running loop's engine
        from ponder.engine import engine_for

        named = LLMJudge(f"vllm:strong@{s.base_url}", Nothing())
        assert not await named.ascore(item, wrong, "")
        assert named._model() is engine_for().model(f"vllm:strong@{s.base_url}")
        await named.aclose()
    assert judge.stats.asked == 2
    assert judge.stats.accepted == 1
    assert checked.stats.checked_by_program == 1


def test_eval_with_a_judge_and_a_dead_judge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import free_port

    wf = str(tmp_path / "wf.yaml")
    (tmp_path / "wf.yaml").write_text(
        "name: one\nmodels: {m: 'vllm:weak@${PONDER_STANDIN}'}\n"
        "layers:\n  - generate: {n: 1}\n  - vote: {}\n"
    )
    monkeypatch.setenv("PONDER_CACHE_PATH", str(tmp_path / "cache.sqlite"))
    monkeypatch.setenv("PONDER_MAX_RETRIES", "0")
    with StandinServer(StandinConfig(time_scale=0)).in_thread() as s:
        monkeypatch.setenv("PONDER_STANDIN", s.base_url)
        out = tmp_path / "judged.jsonl"
        judge = f"vllm:strong@{s.base_url}"
        assert main(["eval", wf, "bank:arithmetic:8", "--out", str(out), "--judge", judge]) == 0
        assert "judge vllm:strong" in capsys.readouterr().out
        assert main(["eval", wf, "champ:2", "--out", str(tmp_path / "c.jsonl")]) == 0
        dead = f"vllm:judge@http://127.0.0.1:{free_port()}/v1"  # not cached: another model
        out2 = tmp_path / "dead.jsonl"
        # items the dead judge could not grade failed: the command says so with exit 3
        assert main(["eval", wf, "bank:arithmetic:8", "--out", str(out2), "--judge", dead]) == 3
    rows = read_results(out2)
    assert len(rows) == 8  # every item is recorded; the judge's failure marks the item
    wrong = [r for r in rows if not r["correct"]]
    assert wrong
    assert all("scorer failed: TransportError" in r["error"] for r in wrong)


async def test_items_in_flight_default_to_the_endpoints_slots(
    standin: StandinServer, tmp_path: Path
) -> None:
    """No --concurrency: the endpoints decide (each endpoint's slots, summed); every
    item still runs once, and a plain callable falls back to 8."""
    from ponder.eval import admission

    spec = WorkflowSpec.model_validate(
        {
            "name": "vote3",
            "models": {
                "a": {"ref": f"vllm:strong@{standin.base_url}", "max_concurrency": 24},
                "b": {"ref": "vllm:weak@http://127.0.0.1:9/v1", "max_concurrency": 40},
            },
            "layers": [{"generate": {"model": "a", "n": 3}}, {"vote": {}}],
        }
    )
    wf = Workflow(spec, settings=Settings.load(cache=False))
    assert admission(wf) == 64
    assert admission(lambda q: q) == 8
    ds = load_dataset("bank:arithmetic:30")
    rows = await evaluate(_workflow(standin.base_url), ds, tmp_path / "r.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(it.id for it in ds.items)


def test_every_jsonl_reader_names_the_bad_line_and_the_unreadable_file(tmp_path: Path) -> None:
    from ponder._internal.jsonl import read_jsonl
    from ponder.memory import load_corpus

    good = tmp_path / "docs.jsonl"
    good.write_text('"first"\n\n{"text": "second"}\n')
    assert list(read_jsonl(good)) == [(1, "first"), (3, {"text": "second"})]
    assert load_corpus(good) == ["first", "second"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{oops\n')
    with pytest.raises(ConfigurationError, match=r"bad\.jsonl:2: not a JSON value"):
        load_corpus(bad)
    with pytest.raises(ConfigurationError, match=r"cannot read the questions file .*missing"):
        list(read_jsonl(tmp_path / "missing.jsonl", "the questions file"))
