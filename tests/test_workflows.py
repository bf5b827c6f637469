"""Workflows: spec, YAML with file:line errors, the Python SDK, graph runtime, resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ponder import ConfigurationError, Settings
from ponder.agents import Pool
from ponder.apps.cli import main
from ponder.graphs import Graph, GraphError
from ponder.testing import FakeModel, StandinConfig, StandinServer
from ponder.workflows import (
    GraphBuilder,
    Pipeline,
    Workflow,
    WorkflowError,
    WorkflowSpec,
    load_spec,
    load_workflow,
    parse_condition,
    step,
)

Q = "Problem 0: What is 53 * 7 + 57?"
EXAMPLES = Path(__file__).parent.parent / "examples" / "workflows"


@pytest_asyncio.fixture
async def standin_url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    async with StandinServer(StandinConfig(time_scale=0)) as s:
        monkeypatch.setenv("PONDER_STANDIN", s.base_url)
        yield s.base_url


def _write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- YAML and Python give the same workflow and the same answers ---------------------------


async def test_yaml_and_python_forms_give_identical_results(
    standin_url: str, settings: Settings
) -> None:
    from_yaml = load_workflow(EXAMPLES / "archon_stack.yaml", settings=settings)
    models = {m: f"vllm:{m}@{standin_url}" for m in ("strong", "weak", "standin")}
    from_code = (
        Pipeline(name="archon-stack", models=models, seed=0)
        .layer(step("generate", models=["strong", "weak", "standin"], n=5, temperature=0.8))
        .then("critique", model="strong")
        .then("rank", model="strong", top_k=3)
        .then("fuse", model="strong", n=3)
        .then("verify", model="strong")
        .then("best_of_n", score="verifier")
        .build(settings=Settings.load(cache=False))
    )
    a = await from_yaml.arun(Q)
    b = await from_code.arun(Q)
    assert a.output.final == b.output.final == "428"
    assert [c.text for c in a.output.candidates] == [c.text for c in b.output.candidates]
    assert a.output.spend.total_tokens == b.output.spend.total_tokens > 0
    assert a.visits == {f"layer{i}": 1 for i in range(1, 7)}


@pytest.mark.parametrize(
    "name", ["archon_stack", "critique_refine_loop", "adaptive_vote", "mcts_math"]
)
async def test_every_example_workflow_runs_on_the_standin(
    name: str, standin_url: str, settings: Settings
) -> None:
    q = Q
    if name == "mcts_math":
        q = "Problem 1: Start with 18. Then subtract 2. Then multiply by 2. What is the result?"
    r = await load_workflow(EXAMPLES / f"{name}.yaml", settings=settings).arun(q)
    assert r.failures == {}
    assert r.output.final is not None


async def test_events_stream_per_node_with_tokens(standin_url: str, settings: Settings) -> None:
    wf = load_workflow(EXAMPLES / "archon_stack.yaml", settings=settings)
    events = [e async for e in wf.astream(Q)]
    kinds = [(e.kind, e.node) for e in events]
    assert kinds[0] == ("node_started", "layer1")
    assert kinds[-1] == ("run_finished", None)
    finished = [e for e in events if e.kind == "node_finished"]
    assert [e.node for e in finished] == [f"layer{i}" for i in range(1, 7)]
    tokens = [e.data["tokens"] for e in finished]
    assert tokens == sorted(tokens)
    assert tokens[0] > 0
    assert len(finished[0].data["new_candidates"]) == 15


# -- graphs: branches, loops, parallel merges, failures -------------------------------------


async def test_parallel_branches_merge_candidates_and_spend_exactly(
    standin_url: str, settings: Settings
) -> None:
    g = (
        GraphBuilder(models={"s": f"vllm:strong@{standin_url}", "w": f"vllm:weak@{standin_url}"})
        .node("start", "generate", model="s", n=2)
        .node("left", "generate", model="s", n=3, seed=7)
        .node("right", "generate", model="w", n=4)
        .node("pick", "vote")
        .edge("start", "left")
        .edge("start", "right")
        .edge("left", "pick")
        .edge("right", "pick")
        .build(settings=settings)
    )
    r = await g.arun(Q)
    out = r.output
    assert r.visits == {"start": 1, "left": 1, "right": 1, "pick": 1}
    assert len(out.candidates) == 2 + 3 + 4  # united by id, the shared 2 counted once
    assert out.final is not None
    assert out.spend.requests == sum(s.requests for s in out.ledger.values())
    assert out.spend.requests == 3  # start, left, right: the shared history counted once


async def test_each_step_of_a_pipeline_has_its_exact_spend_in_the_ledger() -> None:
    model = FakeModel(["The answer is \\boxed{4}."])
    pipe = Pipeline(models={"m": "vllm:fake@http://127.0.0.1:9/v1"})
    pipe.then("generate", model="m", n=2).then("generate", model="m", n=3).then("vote")
    wf = pipe.build(models={"m": model})
    first = (await wf.arun(Q)).output
    again = (await wf.arun(Q)).output  # a second run gets its own entries, same values
    for out in (first, again):
        steps = {k.split("#")[0]: v for k, v in out.ledger.items()}
        generate_steps = [v for k, v in steps.items() if v.requests]
        assert len(generate_steps) == 2
        assert sum(s.requests for s in out.ledger.values()) == out.spend.requests == 2
        assert sum(s.completion_tokens for s in out.ledger.values()) == (
            out.spend.completion_tokens
        )
    assert again.ledger == first.ledger
    assert [c.answer for c in first.candidates] == ["4"] * 5


async def test_a_loop_runs_at_most_max_iterations(standin_url: str, settings: Settings) -> None:
    wf = (
        GraphBuilder(models={"m": f"vllm:weak@{standin_url}"})
        .node("draft", "generate", model="m", n=2)
        .node("again", "generate", model="m", n=1)
        .branch("draft", "candidates < 100", "again", max_iterations=3)
        .edge("again", "draft")
        .build(settings=settings)
    )
    r = await wf.arun(Q)
    assert r.visits == {"draft": 4, "again": 3}


async def test_a_failing_node_fails_its_branch_and_the_rest_survives(
    standin_url: str, settings: Settings
) -> None:
    s = Settings.load(cache=False, max_retries=0)
    wf = (
        GraphBuilder(
            models={"ok": f"vllm:strong@{standin_url}", "down": "vllm:x@http://127.0.0.1:9/v1"}
        )
        .node("start", "generate", model="ok", n=2)
        .node("bad", "generate", model="down", n=1)
        .node("after_bad", "vote")
        .node("good", "vote")
        .edge("start", "bad")
        .edge("start", "good")
        .edge("bad", "after_bad")
        .build(settings=s)
    )
    r = await wf.arun(Q)
    assert "TransportError" in r.failures["bad"]
    assert r.failures["after_bad"] == "every input failed upstream"
    assert r.output.final is not None  # the good branch finished
    assert "good" not in r.failures


async def test_approval_pauses_before_a_node_and_resumes(
    standin_url: str, settings: Settings, tmp_path: Path
) -> None:
    wf = (
        Pipeline(models={"m": f"vllm:strong@{standin_url}"})
        .then("generate", model="m", n=3)
        .then("vote", approve=True)
        .build(settings=settings, checkpoint=tmp_path / "ck.sqlite")
    )
    paused = await wf.arun(Q, thread_id="t")
    assert paused.interrupted_before == ("layer2",)
    assert paused.output.final is None
    done = await wf.arun(None, thread_id="t")
    assert done.interrupted_before == ()
    assert done.output.final == "428"


def test_conditions_parse_and_refuse_nonsense() -> None:
    p = Pool(query="q")
    assert parse_condition("candidates == 0 and has_final == false")(p)
    assert parse_condition("tokens > 5 or candidates < 1")(p)
    with pytest.raises(ValueError, match="unknown metric 'vibes'"):
        parse_condition("vibes > 3")
    with pytest.raises(ValueError, match="needs a score name"):
        parse_condition("max_score > 0.5")
    with pytest.raises(ValueError, match="cannot read condition"):
        parse_condition("candidates >> 3")


def test_graph_validation_names_the_node() -> None:
    async def f(p: Pool) -> Pool:
        return p

    g: Graph[Pool] = Graph(Pool, merge=lambda ps: ps[0])
    g.add_node("a", f).add_node("b", f).add_edge("a", "b").add_edge("b", "a")
    with pytest.raises(GraphError, match="node 'a': is in a loop with no bounded exit"):
        g.compile()
    g2: Graph[Pool] = Graph(Pool, merge=lambda ps: ps[0])
    g2.add_node("a", f).add_node("lost", f)
    with pytest.raises(GraphError, match="node 'lost': cannot be reached"):
        g2.compile()
    g3: Graph[Pool] = Graph(Pool, merge=lambda ps: ps[0])
    g3.add_node("a", f).add_edge("a", "nowhere")
    with pytest.raises(GraphError, match="undefined node 'nowhere'"):
        g3.compile()


# -- bad workflow files: file:line and a hint, before any model call -----------------------


H = "models:\n  m: vllm:x@http://h:1/v1\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (H + "layers:\n  - generate: {model: m, n: [\n", 5, "YAML syntax"),
        (H + "layerz:\n  - vote\n", 3, "unknown key 'layerz'; did you mean 'layers'?"),
        (H + "layers:\n  - vote\n  - summon: {model: m}\n", 5, "unknown component 'summon'"),
        (H + "layers:\n  - generate: {model: nope, n: 2}\n", 4, "model 'nope' is not defined"),
        (H + "layers:\n  - vote\n  - generate:\n      model: m\n      n: 0\n", 7, "greater than"),
        (H + "layers:\n  - rank: {model: m, sharpness: 3}\n", 4, "unknown key 'sharpness'"),
        ("models:\n  m: nonsense\nlayers:\n  - vote\n", 2, "malformed model reference"),
        (H + "nodes:\n  a: vote\n  b: vote\nedges: [a -> b, b -> a]\n", 4, "no bounded exit"),
        (
            H + "nodes:\n  a: vote\nedges:\n"
            "  - {from: a, to: a, when: 'vibes > 1', max_iterations: 2}\n",
            6,
            "unknown metric",
        ),
        ("- just\n- a list\n", 1, "must hold a mapping"),
        (
            "models:\n  m: vllm:x@${PONDER_TEST_NEVER_SET}/v1\nlayers:\n  - vote\n",
            2,
            "environment variable PONDER_TEST_NEVER_SET is not set",
        ),
    ],
)
def test_bad_workflow_files_point_at_the_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(WorkflowError) as err:
        load_spec(path)
    assert f"{path}:{line}:" in str(err.value), str(err.value)
    assert message in str(err.value)


def test_cli_validate_schema_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES / "critique_refine_loop.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "layers" in schema["properties"]
    bad = _write(tmp_path, "layers: [vote]\nmodels: {m: 'vllm:x@http://h:1/v1'}\nseed: lots\n")
    assert main(["validate", str(bad)]) == 1
    assert f"{bad}:3:" in capsys.readouterr().err


# -- kill `ponder run` mid-way, rerun: it resumes, nothing is generated twice ----------------


@pytest.fixture
def slow_standin() -> Iterator[StandinServer]:
    server = StandinServer(StandinConfig(ttft_base=0.6, per_token=0.0, time_scale=1.0))
    with server.in_thread() as s:
        yield s


def test_killed_run_resumes_without_repeating_generations(
    slow_standin: StandinServer, tmp_path: Path
) -> None:
    wf = _write(
        tmp_path,
        "models:\n  m: vllm:strong@${PONDER_STANDIN}\n"
        "layers:\n  - generate: {model: m, n: 4}\n  - critique: {model: m}\n"
        "  - fuse: {model: m}\n  - vote\n",
    )
    env = {
        **os.environ,
        "PONDER_STANDIN": slow_standin.base_url,
        "PONDER_CACHE": "false",  # prove it is the checkpoint, not the cache, that resumes
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    cmd = [sys.executable, "-m", "ponder", "run", str(wf), Q, "--json",
           "--checkpoint", str(tmp_path / "ck.sqlite")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    stats = slow_standin.stats
    # kill while the third layer's request is in flight: the first two are checkpointed
    while not (stats.completed == 2 and stats.in_flight == 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stats.completed == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["final"] == "428"
    assert stats.completed == 3  # generate, critique, fuse: each completed exactly once
    assert stats.cancelled == 1  # the request in flight when it was killed
    assert stats.requests == 4  # ... was the only one sent again


# -- Archon import ----------------------------------------------------------------------------


ARCHON = {
    "name": "archon-testing",
    "layers": [
        [
            {"type": "generator", "model": "strong", "model_type": "vLLM", "samples": 4,
             "temperature": 0.7, "max_context_length": 2048},
            {"type": "generator", "model": "weak", "model_type": "vLLM", "samples": 4},
        ],
        [{"type": "critic", "model": "strong", "model_type": "vLLM"}],
        [{"type": "ranker", "model": "strong", "model_type": "vLLM", "top_k": 3}],
        [{"type": "fuser", "model": "strong", "model_type": "vLLM", "samples": 1}],
        {"models": [{"type": "verifier", "model": "strong", "model_type": "vLLM"}]},
    ],
}  # fmt: skip


async def test_archon_config_imports_and_runs(
    tmp_path: Path,
    standin_url: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PONDER_ARCHON_URL", standin_url)
    src = tmp_path / "archon.json"
    src.write_text(json.dumps(ARCHON))
    out = tmp_path / "imported.yaml"
    assert main(["import-archon", str(src), "--out", str(out)]) == 0
    text = out.read_text()
    assert "keep: accepted" in text  # Archon's verifier drops rejected candidates
    assert "ignored max_context_length" not in text  # a known Archon key with no meaning here
    spec = load_spec(out)
    assert [n.components[0].component for n in spec.layers] == [
        "generate", "critique", "rank", "fuse", "verify", "best_of_n",
    ]  # fmt: skip
    assert len(spec.layers[0].components) == 2
    r = await load_workflow(out, settings=settings).arun(Q)
    assert r.output.final == "428"
    assert r.failures == {}


def test_archon_configs_with_no_counterpart_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": [[{"type": "oracle", "model": "x"}]]}))
    assert main(["import-archon", str(bad)]) == 1
    assert "Archon type 'oracle' has no counterpart" in capsys.readouterr().err
    bad.write_text(
        json.dumps({"layers": [[{"type": "generator", "model": "x", "model_type": "Mars_API"}]]})
    )
    assert main(["import-archon", str(bad)]) == 1
    assert "model_type 'Mars_API' has no counterpart" in capsys.readouterr().err
    bad.write_text("{not json")
    assert main(["import-archon", str(bad)]) == 1
    assert "is not JSON" in capsys.readouterr().err


def test_archon_layers_may_be_bare_components_and_google_groq_models_map() -> None:
    from ponder.workflows import archon_to_spec

    gen = {"type": "generator", "model": "gemini-1.5-pro", "model_type": "Google_API"}
    groq = {"type": "generator", "model": "llama-3.1-70b", "model_type": "Groq_API"}
    fuse = {"type": "fuser", "model": "gemini-1.5-pro", "model_type": "Google_API"}
    listed, _ = archon_to_spec({"layers": [[gen, groq], [fuse]]})
    bare, _ = archon_to_spec({"layers": [[gen, groq], fuse]})  # the fuser as a bare object
    assert bare == listed
    refs = sorted(m.ref for m in bare.models.values())
    assert refs == ["gemini:gemini-1.5-pro", "groq:llama-3.1-70b"]


def test_gemini_and_groq_need_their_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from ponder import MissingAPIKeyError, Model

    with pytest.raises(MissingAPIKeyError, match="GEMINI_API_KEY"):
        Model("gemini:gemini-1.5-pro", settings=Settings.load(cache=False))
    monkeypatch.setenv("GROQ_API_KEY", "gsk-test")
    m = Model("groq:llama-3.1-70b", settings=Settings.load(cache=False))
    assert m.pool.endpoints[0].base_url == "https://api.groq.com/openai/v1"
    assert not m.quirks.supports_n


def test_import_archon_rebinds_models_by_glob_or_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "moa.json"
    gen = [
        {"type": "generator", "model": m, "model_type": "Together_API"}
        for m in ("Qwen/Qwen2-72B-Instruct", "meta-llama/Llama-3-70b", "Qwen/Qwen1.5-110B")
    ]
    src.write_text(json.dumps({"name": "moa", "layers": [gen, [{"type": "fuser", **gen[0]}]]}))
    out = tmp_path / "mapped.yaml"
    args = ["import-archon", str(src), "--out", str(out)]
    assert main([*args, "--model-map", "Qwen/*=vllm:qwen@http://127.0.0.1:8000/v1"]) == 0
    spec = load_spec(out)
    refs = sorted({m.ref for m in spec.models.values()})
    assert refs == ["together:meta-llama/Llama-3-70b", "vllm:qwen@http://127.0.0.1:8000/v1"]
    assert "# model Qwen/Qwen2-72B-Instruct rebound to vllm:qwen@" in out.read_text()
    assert main([*args, "--all-models", "vllm:one@http://127.0.0.1:8001/v1"]) == 0
    assert {m.ref for m in load_spec(out).models.values()} == {"vllm:one@http://127.0.0.1:8001/v1"}
    assert main([*args, "--model-map", "Mistral*=vllm:m@http://127.0.0.1:1/v1"]) == 1
    assert "no model of the config matches" in capsys.readouterr().err
    assert main([*args, "--model-map", "Qwen/*=vllm:m@127.0.0.1:1/v1"]) == 1
    assert "not an http(s) URL" in capsys.readouterr().err


async def test_run_and_eval_rebind_workflow_models(
    tmp_path: Path, standin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ponder.workflows import rebind

    wf = tmp_path / "w.yaml"
    wf.write_text(
        "models:\n  gen: vllm:strong@http://127.0.0.1:9/v1\n  judge: vllm:weak@http://127.0.0.1:9/v1\n"
        "layers:\n  - generate: {model: gen, n: 2}\n  - vote\n"
    )
    spec = rebind(load_spec(wf), [("g*", f"vllm:strong@{standin_url}")])
    assert spec.models["gen"].ref == f"vllm:strong@{standin_url}"
    assert spec.models["judge"].ref == "vllm:weak@http://127.0.0.1:9/v1"
    with pytest.raises(ConfigurationError, match="its models: gen, judge"):
        rebind(load_spec(wf), [("nope", f"vllm:strong@{standin_url}")])
    r = await load_workflow(wf, models={"*": f"vllm:strong@{standin_url}"}).arun(Q)
    assert r.output.final == "428"


async def test_archon_unit_tests_are_judged_by_a_model_end_to_end(
    standin_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Archon's natural-language unit tests: written as sentences, judged per test by a
    model (the stand-in's oracle judges them), the best candidate picked by the share."""
    from ponder.workflows import archon_to_spec

    monkeypatch.setenv("PONDER_ARCHON_URL", standin_url)
    gen = {"type": "generator", "model": "weak", "model_type": "vLLM", "samples": 4}
    config = {
        "layers": [
            [gen],
            [{"type": "unit_test_generator", "model": "strong", "model_type": "vLLM"}],
            [{"type": "unit_test_evaluator", "model": "strong", "model_type": "vLLM"}],
        ]
    }
    spec, notes = archon_to_spec(config)
    names = [n.components[0].component for n in spec.layers]
    assert names == ["generate", "write_tests", "judge_tests", "best_of_n"]
    assert spec.layers[1].components[0].params["kind"] == "natural"
    assert not any("sandbox" in n for n in notes)
    r = await Workflow(spec, settings=settings).arun(Q)
    assert r.failures == {}
    out = r.output
    assert out.tests == ("The final answer equals 428", "The answer shows its reasoning")
    shares = {c.answer: c.scores.get("tests") for c in out.candidates}
    assert all(v is not None for v in shares.values())
    assert out.final == "428"  # the oracle's judge passes right answers (tpr 0.9)


async def test_judge_tests_scores_the_share_passed_and_marks_unparsed() -> None:
    from ponder.agents import Candidate, JudgeTests, Provenance

    replies = iter(["Test 1: pass\nTest 2: fail", "I cannot tell."])
    judge = JudgeTests(FakeModel(lambda _m, _p, _i: next(replies)))
    pool = Pool(query="q", tests=("mentions X", "is short"))

    cands = [
        Candidate.read(id=f"c{i}", text=f"\\boxed{{{i}}}", provenance=Provenance(component="t"))
        for i in range(2)
    ]
    out = await judge(pool.with_candidates(cands))
    a, b = out.candidates
    assert a.scores["tests"] == 0.5
    assert a.verdicts["tests"] is False
    assert b.verdicts["tests"] is None
    assert b.error == "the test judge gave no verdicts"
    empty = await judge(Pool(query="q"))
    assert "no tests to judge" in empty.notes[-1]


async def test_workflow_run_works_inside_a_running_event_loop() -> None:
    """As in a Jupyter cell: the sync facade inside a running loop."""
    fake = FakeModel(["\\boxed{7}"])
    spec = WorkflowSpec.model_validate(
        {"models": {"m": "vllm:fake@http://127.0.0.1:9/v1"}, "layers": ["generate", "vote"]}
    )
    asyncio.get_running_loop()  # we are inside one
    result = Workflow(spec, models={"m": fake}).run("q")
    assert result.output.final == "7"


async def test_progress_from_python_events_callback_and_a_live_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As in a script or a notebook: each event reaches the callback as it happens, and
    progress=True draws the table of nodes."""
    fake = FakeModel(["\\boxed{7}"])
    spec = WorkflowSpec.model_validate(
        {"models": {"m": "vllm:fake@http://127.0.0.1:9/v1"}, "layers": ["generate", "vote"]}
    )
    seen: list[str] = []
    wf = Workflow(spec, models={"m": fake})
    result = await wf.arun("q", on_event=lambda e: seen.append(f"{e.kind}:{e.node}"))
    assert result.output.final == "7"
    assert seen[:2] == ["node_started:layer1", "node_finished:layer1"]
    assert seen[-1] == "run_finished:None"
    result = wf.run("q", progress=True)  # inside this running loop, too
    assert result.output.final == "7"
    out = capsys.readouterr().out
    assert "layer1" in out
    assert "finished" in out


async def test_a_model_reference_is_parsed_once_from_file_to_request(
    standin: StandinServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow file's model strings become typed references once: checking the spec,
    building its models in the engine and sending requests reuse that value."""
    from ponder.backends import ModelRef
    from ponder.engine import Engine

    parsed: list[str] = []
    real = ModelRef.model_validate

    def counting(cls: type[ModelRef], value: object, /, **kw: object) -> ModelRef:
        if isinstance(value, str):
            parsed.append(value)
        return real(value, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ModelRef, "model_validate", classmethod(counting))
    path = tmp_path / "wf.yaml"
    path.write_text(
        f"models:\n  a: vllm:strong@{standin.base_url}\n  b: vllm:weak@{standin.base_url}\n"
        "layers:\n  - generate: {models: [a, b], n: 2}\n  - vote\n"
    )
    async with Engine(Settings.load(cache=False)) as engine:
        wf = Workflow(load_spec(path), engine=engine)
        result = await wf.arun("What is 2 + 3?")
    assert len(result.output.candidates) == 4
    assert sorted(parsed) == [f"vllm:strong@{standin.base_url}", f"vllm:weak@{standin.base_url}"]


def test_a_reward_model_url_reads_the_environment_like_a_model_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ponder.agents import RewardRankConfig
    from ponder.agents._reward import reward_model_ref

    config = RewardRankConfig(url="${PONDER_TEST_REWARD_URL}/v1")
    monkeypatch.setenv("PONDER_TEST_REWARD_URL", "http://127.0.0.1:9100")
    assert reward_model_ref(config, Settings.load()).base_urls == ("http://127.0.0.1:9100/v1",)
    monkeypatch.delenv("PONDER_TEST_REWARD_URL")
    with pytest.raises(ConfigurationError, match="PONDER_TEST_REWARD_URL is not set"):
        reward_model_ref(config, Settings.load())
    fallback = RewardRankConfig(url="${PONDER_TEST_REWARD_URL:-http://127.0.0.1:9200}")
    assert reward_model_ref(fallback, Settings.load()).base_urls == ("http://127.0.0.1:9200",)
