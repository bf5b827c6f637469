"""Archon fidelity: a corpus of Archon configurations (tests/archon_corpus/, written from
Archon's documented format) covering every layer form, component type, key and model
type. Each converts, validates and runs end to end on the stand-in; the two layer forms of
one stack give identical results; Archon's keys carry Archon's meaning."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ponder import Settings
from ponder.apps.cli import main
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank
from ponder.workflows import Workflow, archon_to_spec, load_spec
from ponder.workflows._archon import _KEYS, _PROVIDERS, PAIRRM

CORPUS = Path(__file__).with_name("archon_corpus")
FILES = sorted(CORPUS.glob("*.json"))
ORACLE = OracleConfig(accuracy={"strong": 0.7})
BANK = ProblemBank(ORACLE.bank_seed, ORACLE.distractors)


def question(i: int = 0) -> str:
    return BANK.problem(BANK.ids("arithmetic", 1, start=i)[0]).question


def answer(i: int = 0) -> str:
    return BANK.problem(BANK.ids("arithmetic", 1, start=i)[0]).answer


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / name).read_text())
    return data


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        yield s


def entries(layer: Any) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(layer, list):
        return "list", layer
    if "type" in layer:
        return "bare", [layer]
    return "branches", layer["models"]


def test_the_corpus_covers_every_layer_form_type_key_and_model_type() -> None:
    forms: set[str] = set()
    keys: dict[str, set[str]] = {}
    model_types: set[str] = set()
    for f in FILES:
        for layer in load(f.name)["layers"]:
            form, es = entries(layer)
            forms.add(form)
            for e in es:
                keys.setdefault(e["type"], set()).update(e)
                model_types.add(e["model_type"].lower())
                if "ranker_config" in e:
                    model_types.add("")
    assert forms == {"list", "branches", "bare"}
    assert set(keys) == set(_KEYS)  # every component type
    for kind, known in _KEYS.items():
        assert known <= keys[kind], f"{kind}: {sorted(known - keys[kind])} not in the corpus"
    assert {"checkpoint", "max_context_length"} <= set().union(*keys.values())
    remote = {k for k, v in _PROVIDERS.items() if v is not None}
    assert remote | {"vllm", ""} <= model_types  # "" is the PairRM ranker


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_each_config_converts_validates_and_runs_on_the_standin(
    path: Path, standin: StandinServer, tmp_path: Path
) -> None:
    config = load(path.name)
    # as published: every model keeps its provider
    spec, notes = archon_to_spec(config)
    assert spec.layers[-1].components[0].component == "best_of_n"
    assert any("a final best_of_n picks" in n for n in notes)  # the header says what differs
    # on the endpoint one has: every model (PairRM too) on the stand-in
    spec, notes = archon_to_spec(
        config, all_models=f"vllm:strong@{standin.base_url}", reward_url=standin.base_url
    )
    wf = Workflow(spec, settings=Settings.load(cache=False))
    r = await wf.arun(question(1))
    assert r.failures == {}, r.failures
    assert r.output.final is not None
    # the CLI writes the same workflow, which validates from the file
    out = tmp_path / "w.yaml"
    args = ["import-archon", str(path), "--out", str(out), "--reward-url", standin.base_url]
    assert main([*args, "--all-models", f"vllm:strong@{standin.base_url}"]) == 0
    assert load_spec(out).model_dump() == spec.model_dump()


async def test_the_two_layer_forms_of_one_stack_give_identical_results(
    standin: StandinServer,
) -> None:
    ref = f"vllm:strong@{standin.base_url}"
    results = []
    for name in ("moa_list.json", "moa_branches.json"):
        spec, _ = archon_to_spec(load(name), all_models=ref)
        wf = Workflow(spec, settings=Settings.load(cache=False))
        events = [e async for e in wf.astream(question(2))]
        counts = [e.data["candidates"] for e in events if e.kind == "node_finished"]
        out = next(e.data for e in events if e.kind == "run_finished")
        results.append((counts, out))
    (counts_a, out_a), (counts_b, out_b) = results
    assert counts_a == counts_b
    assert counts_a[0] == 6  # six generators of one model keep six candidates
    assert counts_a[3] == 6  # and six fusers keep six
    assert out_a == out_b


async def test_branches_replicate_by_default_or_are_ignored_as_archon_loads_them() -> None:
    config = load("moa_branches.json")
    spec, notes = archon_to_spec(config)
    assert len(spec.layers[0].components) == 6
    assert any("branches: 6 runs its 1 component(s) 6 times" in n for n in notes)
    spec, notes = archon_to_spec(config, branches="ignore")
    assert len(spec.layers[0].components) == 1
    assert any("branches: 6 ignored" in n for n in notes)
    bad = {"layers": [{"branches": 0, "models": config["layers"][0]["models"]}]}
    with pytest.raises(ValueError, match="branches must be an integer >= 1"):
        archon_to_spec(bad)


async def test_pairrm_is_a_reward_model_at_an_endpoint_or_a_judged_pairwise_knockout(
    standin: StandinServer,
) -> None:
    config = load("pairrm.json")
    ref = f"vllm:strong@{standin.base_url}"
    spec, notes = archon_to_spec(config, model_map=[("*", ref)], reward_url=standin.base_url)
    ranker = spec.layers[1].components[0]
    assert ranker.component == "reward_rank"
    assert ranker.params == {
        "url": standin.base_url,
        "reward_model": PAIRRM,
        "top_k": 3,
        "batch_size": 4,
    }
    wf = Workflow(spec, settings=Settings.load(cache=False))
    events = [e async for e in wf.astream(question(3))]
    finished = [e.data for e in events if e.kind == "node_finished"]
    assert finished[1]["candidates"] == 3
    assert any("PairRM is the reward model at" in n for n in notes)

    # no reward model: a pairwise knockout judged by the config's own fuser model
    spec, notes = archon_to_spec(config)
    ranker = spec.layers[1].components[0]
    assert ranker.component == "rank"
    assert ranker.params["mode"] == "pairwise"
    assert spec.models[ranker.model or ""].ref == "together:Qwen/Qwen2-72B-Instruct"
    assert any("pairwise knockout judged by a chat model" in n for n in notes)
    # or by the model --model-map names for PairRM
    spec, _ = archon_to_spec(config, model_map=[(PAIRRM, ref), ("*", ref)])
    assert spec.models[spec.layers[1].components[0].model or ""].ref == ref


async def test_the_reward_ranker_orders_by_score_and_says_when_the_server_fails(
    standin: StandinServer,
) -> None:
    from ponder.agents import Candidate, Pool, Provenance, RewardRankConfig, RewardRanker
    from ponder.errors import BadRequestError, TransportError

    q = question(4)
    right = answer(4)
    cands = [
        Candidate.read(id=f"c{i}", text=f"\\boxed{{{a}}}", provenance=Provenance(component="t"))
        for i, a in enumerate(["1", right, "2", "3"])
    ]
    pool = Pool(query=q).with_candidates(cands)
    ranker = RewardRanker(RewardRankConfig(url=standin.base_url, batch_size=3, top_k=2))
    out = await ranker(pool)
    assert next(c.answer for c in out.candidates) == right
    assert len(out.candidates) == 2
    assert out.candidates[0].scores["rank"] == 1.0
    assert out.candidates[0].scores["reward"] >= 0.5
    with pytest.raises(TransportError, match="Is the server running"):
        await RewardRanker(RewardRankConfig(url="http://127.0.0.1:9/v1", attempts=1))(pool)
    with pytest.raises(BadRequestError, match="HTTP 404"):
        await RewardRanker(RewardRankConfig(url=standin.root_url, attempts=1))(pool)
    with pytest.raises(ValueError, match="http"):
        RewardRankConfig(url="file:///etc/passwd")


async def test_the_reward_model_is_a_model_of_the_workflows_engine(
    standin: StandinServer, tmp_path: Path
) -> None:
    """reward_rank scores through the model layer: the workflow's engine builds the reward
    model, so its requests are counted on that model and share its endpoint, a rerun is
    answered from the response cache, and the network guard refuses a remote reward
    server as it refuses any model."""
    from ponder.engine import Engine
    from ponder.workflows import WorkflowSpec

    def spec(url: str) -> WorkflowSpec:
        return WorkflowSpec.model_validate({
            "models": {"m": f"vllm:strong@{standin.base_url}"},
            "layers": [{"generate": {"n": 4}}, {"reward_rank": {"url": url, "top_k": 2}}],
        })  # fmt: skip

    settings = Settings.load(cache_path=tmp_path / "cache.sqlite")
    async with Engine(settings) as engine:
        wf = Workflow(spec(standin.base_url), engine=engine)
        first = await wf.arun(question(2))
        reward = engine.model(f"vllm:{PAIRRM}@{standin.base_url}")
        assert reward.meter.requests == 1  # one batch of 4 candidates, on the engine's model
        assert reward.meter.usage.prompt_tokens > 0
        served = standin.stats.requests
        again = await Workflow(spec(standin.base_url), engine=engine).arun(question(2))
        assert standin.stats.requests == served  # samples and scores from the cache
        assert [c.scores["reward"] for c in again.output.candidates] == [
            c.scores["reward"] for c in first.output.candidates
        ]
        assert len(first.output.candidates) == 2
        # (scores are cached by model name, like samples: a new question asks the server)
        remote = await Workflow(spec("http://10.1.2.3:8000/v1"), engine=engine).arun("1 + 2?")
        assert any("blocked a model request" in why for why in remote.failures.values())


async def test_moa_lite_pre_ranks_and_fuses_the_top_two_with_length_control(
    standin: StandinServer,
) -> None:
    config = load("moa_lite.json")
    spec, notes = archon_to_spec(
        config, all_models=f"vllm:strong@{standin.base_url}", reward_url=standin.base_url
    )
    kinds = [[c.component for c in n.components] for n in spec.layers]
    assert kinds == [["generate"] * 4, ["reward_rank"], ["fuse"], ["fuse", "fuse"], ["best_of_n"]]
    fuse = spec.layers[2].components[0].params
    assert fuse["top_k"] == 2
    assert fuse["n"] == 1
    assert spec.layers[3].components[0].params["length_control"] is True
    assert "length_control" not in spec.layers[3].components[1].params  # the typo: unread
    unread = next(n for n in notes if n.startswith("accepted with no effect"))
    assert "fuser.length_contorl" in unread
    assert "fuser.use_critiques" in unread
    r = await Workflow(spec, settings=Settings.load(cache=False)).arun(question(5))
    assert r.failures == {}
    fused = [c for c in r.output.candidates if c.provenance.component == "fuse"]
    assert fused


async def test_a_verifier_keeps_the_first_k_accepted_and_passes_all_when_none_is(
    standin: StandinServer,
) -> None:
    from ponder.agents import (
        Candidate,
        ModelVerifier,
        Pool,
        Provenance,
        VerifierConfig,
    )
    from ponder.testing import FakeModel

    spec, _ = archon_to_spec(load("verifier_first_k.json"))
    verify = spec.layers[1].components[0]
    assert verify.model == "claude_3_5_sonnet_20240620"
    assert verify.params == {"temperature": 0.7, "max_tokens": 2048, "keep": "accepted",
                             "first_k": 2}  # fmt: skip
    cands = [
        Candidate.read(id=f"c{i}", text=f"\\boxed{{{i}}}", provenance=Provenance(component="t"))
        for i in range(6)
    ]
    pool = Pool(query="q").with_candidates(cands)
    verdicts = {"0": "no", "1": "yes", "2": "no", "3": "yes", "4": "yes", "5": "yes"}
    judge = FakeModel(lambda m, _p, _i: f"Verdict: {verdicts[m[-1].content[-2]]}")
    out = await ModelVerifier(judge, VerifierConfig(first_k=2, keep="accepted", parallel=1))(pool)
    assert [c.id for c in out.candidates] == ["c1", "c3"]
    assert len(judge.calls) == 4  # one at a time, it stopped after c3 as Archon does
    out = await ModelVerifier(judge, VerifierConfig(keep="accepted"))(pool)
    assert [c.id for c in out.candidates] == ["c1", "c3", "c4", "c5"]
    nobody = FakeModel(lambda *_: "Verdict: no")
    out = await ModelVerifier(nobody, VerifierConfig(keep="accepted"))(pool)
    assert len(out.candidates) == 6
    assert any("no candidate was accepted" in n for n in out.notes)


async def test_unit_test_evaluator_first_pass_top_k_and_the_stripped_query(
    standin: StandinServer,
) -> None:
    config = load("unit_tests_first_pass.json")
    spec, _ = archon_to_spec(config)
    params = spec.layers[2].components[0].params
    assert params["first_k"] == 1
    assert params["top_k"] == 1
    assert params["strip_tests_from_query"] is True
    assert spec.layers[1].components[0].params["max_tests"] == 3
    spec, _ = archon_to_spec(config, all_models=f"vllm:strong@{standin.base_url}")
    q = question(6) + "\nYour response should pass the following unit tests:\n- it is a number"
    wf = Workflow(spec, settings=Settings.load(cache=False))
    events = [e async for e in wf.astream(q)]
    finished = [e.data for e in events if e.kind == "node_finished"]
    assert finished[2]["candidates"] == 1  # the first candidate passing every test
    r = await wf.arun(q)
    assert r.output.final is not None
    assert r.output.candidates[0].verdicts["tests"] is True


def test_bedrock_and_other_model_types_map_to_their_providers() -> None:
    spec, _notes = archon_to_spec(load("bare_and_providers.json"))
    refs = sorted(m.ref for m in spec.models.values())
    assert "bedrock:anthropic.claude-3-haiku-20240307-v1:0" in refs
    assert "gemini:gemini-1.5-pro-001" in refs
    assert "groq:llama-3.1-70b-versatile" in refs
    assert "openai:gpt-4o" in refs
    assert "anthropic:claude-3-5-sonnet-20240620" in refs
    gens = spec.layers[0].components
    opt = next(c for c in gens if spec.models[c.model or ""].ref.startswith("vllm:facebook"))
    assert opt.params["system"] is None  # no_system
    llama = archon_to_spec(
        {"layers": [[{"type": "generator", "model": "bedrock/meta.llama3-70b-instruct-v1:0",
                      "model_type": "Bedrock_API"}]]}
    )  # fmt: skip
    assert llama[0].models["meta_llama3_70b_instruct_v1_0"].ref.startswith("bedrock:meta.")
    assert any("serves Anthropic models only" in n for n in llama[1])


def test_import_archon_cli_takes_reward_url_and_branches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "w.yaml"
    src = str(CORPUS / "moa_branches.json")
    assert main(["import-archon", src, "--out", str(out), "--branches", "ignore"]) == 0
    assert len(load_spec(out).layers[0].components) == 1
    assert main(["import-archon", src, "--branches", "twice"]) == 1
    assert "--branches must be 'replicate' or 'ignore'" in capsys.readouterr().err
    src = str(CORPUS / "pairrm.json")
    assert main(["import-archon", src, "--reward-url", "http://127.0.0.1:8001/v1"]) == 0
    text = capsys.readouterr().out
    assert "reward_rank:" in text
    assert "# layer 2, ranker: PairRM is the reward model" in text
