"""Reasoning components against the stand-in oracle (exact expectations) and fakes."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import AsyncIterator
from fractions import Fraction
from typing import Any

import pytest
import pytest_asyncio
from conftest import cand
from hypothesis import given
from hypothesis import strategies as st

from ponder import Model, Settings
from ponder.agents import (
    AdaptiveVote,
    AdaptiveVoteConfig,
    BestOfN,
    BestOfNConfig,
    Candidate,
    Critic,
    ExecutionVote,
    Fuser,
    Generate,
    GenerateConfig,
    JudgeConfig,
    ModelStep,
    ModelVerifier,
    Pool,
    ProgrammaticVerifier,
    Provenance,
    Ranker,
    RankerConfig,
    Refine,
    RunTests,
    RunTestsConfig,
    VerifierConfig,
    Vote,
    VoteConfig,
    WriteTests,
    answers_equivalent,
    extract_answer,
    get_component,
    leader_settled_probability,
    normalize_answer,
    parse_ranking,
    parse_verdict,
    probes_from_tests,
    split_tests,
    vote,
)
from ponder.agents._base import _Config
from ponder.errors import ConfigurationError, RateLimitError
from ponder.testing import FakeModel, StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank, majority_vote_accuracy

P, K = 0.6, 3
ORACLE = OracleConfig(accuracy={"m": P}, distractors=K, verifier_tpr=0.9, verifier_fpr=0.2)
BANK = ProblemBank(ORACLE.bank_seed, K)


@pytest_asyncio.fixture
async def oracle_url() -> AsyncIterator[str]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        yield s.base_url


_PROV = Provenance(component="test")


# -- answers ----------------------------------------------------------------------------


@given(st.integers(-(10**6), 10**6))
def test_boxed_integers_are_extracted_and_normalised(x: int) -> None:
    assert normalize_answer(extract_answer(f"So we get \\boxed{{{x}}}. Done.")) == str(x)


@given(st.fractions(max_denominator=50))
def test_equivalent_spellings_of_a_fraction_share_one_key(f: Fraction) -> None:
    spellings = [str(f), f"\\frac{{{f.numerator}}}{{{f.denominator}}}", f"${f}$"]
    if f.denominator == 1:
        spellings.append(f"{f.numerator}.0")
    keys = {normalize_answer(s) for s in spellings}
    assert len(keys) == 1


@given(st.text(max_size=40))
def test_normalising_never_crashes_and_is_idempotent(s: str) -> None:
    once = normalize_answer(s)
    assert once is None or normalize_answer(once) == once or once.strip() != once


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("The answer is (C).", "choice", "C"),
        ("I pick (b)", "choice", "B"),
        ("I think it is D because A is wrong.", "choice", "D"),
        ("Answer: 12 apples", "number", "12"),
        ("```python\ndef f():\n    return 1\n```", "code", "def f():\n    return 1"),
        ("", "auto", None),
        ("no digits here", "number", None),
        ("\\boxed{\\frac{3}{6}}", "auto", "1/2"),
    ],
)
def test_extraction_by_kind(text: str, kind: str, expected: str | None) -> None:
    got = normalize_answer(extract_answer(text, kind), kind)  # type: ignore[arg-type]
    assert got == expected


def test_math_equivalence_uses_math_verify() -> None:
    assert answers_equivalent("\\frac{1}{2}", "0.5")
    assert answers_equivalent("x^2+1", "1+x^2")
    assert not answers_equivalent("2", "3")
    assert not answers_equivalent(None, "3")


# -- voting -----------------------------------------------------------------------------


def test_vote_counts_normalised_answers_and_skips_unparsed() -> None:
    r = vote([cand("1/2", 0), cand("0.5", 1), cand("3", 2), cand(None, 3)])
    assert r.key == "1/2"
    assert r.answer == "1/2"
    assert r.tally == {"1/2": 2.0, "3": 1.0}
    assert r.abstained == 1
    assert r.support == pytest.approx(2 / 3)


def test_weighted_vote_and_deterministic_ties() -> None:
    cands = [cand("1", 0, verifier=0.0), cand("1", 1, verifier=0.0), cand("2", 2, verifier=1)]
    assert vote(cands, weight="verifier").answer == "2"
    tie = [cand("1", 0), cand("2", 1)]
    assert {vote(tie, seed=s).answer for s in range(20)} == {"1", "2"}
    assert vote(tie, seed=3).answer == vote(tie, seed=3).answer
    assert vote([]).answer is None


def test_leader_settled_probability_is_the_beta_tail() -> None:
    assert leader_settled_probability(0, 0) == pytest.approx(0.5)
    assert leader_settled_probability(3, 0) == pytest.approx(1 - 0.5**4)
    assert leader_settled_probability(4, 0) == pytest.approx(1 - 0.5**5)
    assert leader_settled_probability(5, 5) == pytest.approx(0.5)


async def test_majority_vote_through_the_server_matches_the_computed_accuracy(
    oracle_url: str, settings: Settings
) -> None:
    n, problems = 5, 600
    ids = BANK.ids("arithmetic", problems)
    right = 0
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        gen = Generate(m, GenerateConfig(n=n, seed=0))
        for pid in ids:
            pool = await Vote(VoteConfig(seed=pid))(
                await gen(Pool(query=BANK.problem(pid).question))
            )
            right += BANK.problem(pid).is_correct(pool.final)
    expected = majority_vote_accuracy(P, K, n)
    sigma = math.sqrt(expected * (1 - expected) / problems)
    assert abs(right / problems - expected) < 4 * sigma, (right / problems, expected)


async def test_verifier_best_of_n_matches_the_computed_accuracy(
    oracle_url: str, settings: Settings
) -> None:
    n, problems = 4, 500
    tpr, fpr = ORACLE.verifier_tpr, ORACLE.verifier_fpr
    q = P * tpr + (1 - P) * fpr  # P(a sample is accepted)
    none = (1 - q) ** n
    # the first accepted sample, or the first sample when none is accepted
    expected = (1 - none) * P * tpr / q + none * P * (1 - tpr) / (1 - q)
    right = 0
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        gen = Generate(m, GenerateConfig(n=n, seed=1))
        verify = ModelVerifier(m, VerifierConfig(temperature=0.7, seed=5))
        pick = BestOfN(BestOfNConfig(score="verifier", tie_break="first"))
        for pid in BANK.ids("arithmetic", problems):
            pool = await pick(await verify(await gen(Pool(query=BANK.problem(pid).question))))
            right += BANK.problem(pid).is_correct(pool.final)
    sigma = math.sqrt(expected * (1 - expected) / problems)
    assert abs(right / problems - expected) < 4 * sigma, (right / problems, expected)


def _simulated_weighted_vote(trials: int, n: int) -> float:
    """Independent Monte Carlo of 'vote among verifier-accepted samples'."""
    rng = random.Random(0)
    right = 0
    for _ in range(trials):
        tally: dict[int, int] = {}
        firsts: list[int] = []
        for _ in range(n):
            a = 0 if rng.random() < P else rng.randint(1, K)
            firsts.append(a)
            ok = rng.random() < (ORACLE.verifier_tpr if a == 0 else ORACLE.verifier_fpr)
            if ok:
                tally[a] = tally.get(a, 0) + 1
        if not tally:
            right += 0  # nothing accepted: the vote abstains
            continue
        top = max(tally.values())
        leaders = [a for a, v in tally.items() if v == top]
        right += rng.choice(leaders) == 0
    return right / trials


async def test_verifier_weighted_vote_behaves_as_simulated(
    oracle_url: str, settings: Settings
) -> None:
    n, problems = 5, 500
    expected = _simulated_weighted_vote(200_000, n)
    right = 0
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        gen = Generate(m, GenerateConfig(n=n, seed=2))
        verify = ModelVerifier(m, VerifierConfig(temperature=0.7, seed=9))
        weighted = Vote(VoteConfig(weight="verifier", seed=0))
        for pid in BANK.ids("arithmetic", problems):
            pool = await weighted(await verify(await gen(Pool(query=BANK.problem(pid).question))))
            right += BANK.problem(pid).is_correct(pool.final)
    sigma = math.sqrt(expected * (1 - expected) / problems)
    assert abs(right / problems - expected) < 4 * sigma, (right / problems, expected)
    assert expected > majority_vote_accuracy(P, K, n) - 0.2  # sanity of the simulation


# -- adaptive vote ----------------------------------------------------------------------


async def test_adaptive_vote_stops_once_the_leader_is_settled() -> None:
    fake = FakeModel(["\\boxed{7}"])
    ada = AdaptiveVote(Generate(fake, GenerateConfig(n=16)), AdaptiveVoteConfig(max_samples=16))
    pool = await ada(Pool(query="q"))
    assert pool.final == "7"
    assert pool.vote is not None
    assert pool.vote.samples_used == 4  # P(leader) after 3-0 is 0.9375, after 4-0 0.969
    assert pool.vote.samples_saved == 12
    assert len(pool.candidates) == 4


async def test_adaptive_vote_draws_the_same_samples_as_fixed_n(
    oracle_url: str, settings: Settings
) -> None:
    q = BANK.problem(BANK.ids("arithmetic", 1)[0]).question
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        fixed = await Generate(m, GenerateConfig(n=16, seed=3))(Pool(query=q))
        ada = AdaptiveVote(Generate(m, GenerateConfig(seed=3)), AdaptiveVoteConfig(batch=2))
        adaptive = await ada(Pool(query=q))
        async with Model(f"vllm:m@{oracle_url}", settings=settings, cache=False) as bare:
            uncached = await AdaptiveVote(
                Generate(bare, GenerateConfig(seed=3)), AdaptiveVoteConfig(batch=2)
            )(Pool(query=q))
    used = len(adaptive.candidates)
    assert [c.text for c in adaptive.candidates] == [c.text for c in fixed.candidates[:used]]
    # without a cache it asks only for the new samples, and gets the same ones
    assert [c.text for c in uncached.candidates] == [c.text for c in adaptive.candidates]
    assert 0 < uncached.spend.completion_tokens <= fixed.spend.completion_tokens
    assert adaptive.spend.completion_tokens == 0  # every sample was a cache hit


# -- judges -----------------------------------------------------------------------------


def test_verdict_and_ranking_parsers() -> None:
    assert parse_verdict("Looks fine.\nVerdict: yes") is True
    assert parse_verdict("Verdict: **No**") is False
    assert parse_verdict("I am not sure") is None
    assert parse_ranking("Ranking: [2] > [1] > [3]", 3) == [1, 0, 2]
    assert parse_ranking("Ranking: [2] > [9] > [2]", 3) == [1, 0, 2]
    assert parse_ranking("I like the second one", 3) is None


async def test_unparseable_judges_mark_candidates_instead_of_failing() -> None:
    babble = FakeModel(["I cannot decide, they are all lovely."])
    pool = Pool(query="q", candidates=(cand("1", 0), cand("2", 1), cand(None, 2)))
    verified = await ModelVerifier(babble)(pool)
    assert [c.verdicts["verifier"] for c in verified.candidates] == [None, None, None]
    assert verified.candidates[0].error == "the verifier said neither yes nor no"
    assert verified.candidates[2].error == "no answer to verify"
    ranked = await Ranker(babble)(pool)
    assert [c.id for c in ranked.candidates] == ["c0", "c1", "c2"]
    assert any("did not parse" in n for n in ranked.notes)
    critiqued = await Critic(babble)(pool)
    assert all(not c.critiques for c in critiqued.candidates)
    assert any("no critique" in n for n in critiqued.notes)
    empty = Pool(query="q")
    assert (await Fuser(babble)(empty)).notes == ("fuse: no candidates to fuse",)
    assert (await BestOfN()(empty)).final is None
    assert (await Vote()(empty)).final is None


async def test_ranker_puts_right_answers_first_as_often_as_configured(
    oracle_url: str, settings: Settings
) -> None:
    hits, trials = 0, 300
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        for pid in BANK.ids("arithmetic", trials):
            p = BANK.problem(pid)
            cands = [cand(p.distractors[0], 0), cand(p.answer, 1), cand(p.distractors[1], 2)]
            ranked = await Ranker(m, RankerConfig(top_k=2, seed=pid))(
                Pool(query=p.question, candidates=tuple(cands))
            )
            assert len(ranked.candidates) == 2
            hits += ranked.candidates[0].answer == p.answer
    # right first: ranker_accuracy, plus a 1/3 chance of a lucky shuffle otherwise
    expected = ORACLE.ranker_accuracy + (1 - ORACLE.ranker_accuracy) / 3
    assert abs(hits / trials - expected) < 4 * math.sqrt(expected * (1 - expected) / trials)


async def test_pairwise_tournament_ranks_every_candidate(
    oracle_url: str, settings: Settings
) -> None:
    p = BANK.problem(BANK.ids("arithmetic", 1)[0])
    cands = [cand(d, i) for i, d in enumerate(p.distractors)] + [cand(p.answer, 9)]
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        ranked = await Ranker(m, RankerConfig(mode="pairwise"))(
            Pool(query=p.question, candidates=tuple(cands))
        )
    assert sorted(c.id for c in ranked.candidates) == sorted(c.id for c in cands)
    assert ranked.spend.requests == 3  # a knockout of 4 is 3 matches
    assert ranked.candidates[0].scores["rank"] == 1.0


async def test_critic_fuser_refine_on_the_oracle(oracle_url: str, settings: Settings) -> None:
    p = BANK.problem(BANK.ids("arithmetic", 1)[0])
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        pool = await Generate(m, GenerateConfig(n=4, seed=4))(Pool(query=p.question))
        pool = await Critic(m)(pool)
        assert all(c.critiques for c in pool.candidates)
        fused = await Fuser(m)(pool)
        assert len(fused.candidates) == 1
        assert fused.candidates[0].provenance.parents == tuple(c.id for c in pool.candidates)
        assert fused.spend.total_tokens > pool.spend.total_tokens
        wrong = Pool(query=p.question, candidates=(cand(p.distractors[0], 0),))
        checker = ProgrammaticVerifier.math(p.answer)
        refined = await Refine(m, checker)(wrong)
    assert refined.candidates[0].id.startswith("c0/r")
    assert refined.candidates[0].critiques
    assert any(n.startswith("refine:") for n in refined.notes)


async def test_programmatic_verifier_records_checker_failures() -> None:
    def boom(answer: str, _c: Candidate) -> bool:
        raise RuntimeError("bad checker")

    pool = await ProgrammaticVerifier(boom)(Pool(query="q", candidates=(cand("1"),)))
    assert pool.candidates[0].verdicts["check"] is None
    assert "bad checker" in (pool.candidates[0].error or "")
    ok = await ProgrammaticVerifier.math("1/2")(Pool(query="q", candidates=(cand("0.5"),)))
    assert ok.candidates[0].scores["math"] == 1.0


async def test_generate_ensembles_models_and_records_provenance() -> None:
    a = FakeModel(["\\boxed{1}"], name="a")
    b = FakeModel(["no answer"], name="b")
    pool = await Generate([a, b], GenerateConfig(n=2, seed=10))(Pool(query="q"))
    assert [c.provenance.model for c in pool.candidates] == [a.id, a.id, b.id, b.id]
    assert [c.provenance.seed for c in pool.candidates] == [10, 11, 10, 11]
    assert pool.candidates[2].error == "no final answer found"
    assert pool.spend.requests >= 2


def test_registry_names_components_and_refuses_unknown_ones() -> None:
    import ponder.agents
    from ponder.agents._base import BUILTIN_MODULES

    # every built-in is where the lazy registry looks for it, and nothing is missing
    registry = ponder.agents.COMPONENTS
    agents = {n: i.cls.__module__ for n, i in registry.items() if i.cls.__module__.startswith(
        "ponder.agents.")}  # fmt: skip
    assert agents == BUILTIN_MODULES
    assert get_component("vote").cls is Vote
    assert get_component("adaptive_vote").cls is AdaptiveVote
    with pytest.raises(ConfigurationError, match="unknown component 'nope'"):
        get_component("nope")
    with pytest.raises(ConfigurationError, match="did you mean 'vote'"):
        get_component("vot")


# -- unit tests for code ----------------------------------------------------------------


async def test_written_tests_pick_the_right_code_candidate(
    oracle_url: str, settings: Settings
) -> None:
    p = BANK.problem(BANK.ids("code", 1)[0])
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        pool = await Generate(m, GenerateConfig(n=6, seed=2, answer_kind="code"))(
            Pool(query=p.question)
        )
        pool = await WriteTests(m)(pool)
    assert list(pool.tests) == list(p.tests)
    pool = await RunTests()(pool)
    for c in pool.candidates:
        right = BANK.problem(p.id).is_correct(c.answer)
        assert c.scores["tests"] == (1.0 if right else 0.0), c.answer
        assert c.verdicts["tests"] is right
    best = await BestOfN(BestOfNConfig(score="tests", answer_kind="code"))(pool)
    if any(BANK.problem(p.id).is_correct(c.answer) for c in pool.candidates):
        assert BANK.problem(p.id).is_correct(best.final)


async def test_bad_code_and_hostile_tests_are_recorded_not_raised() -> None:
    tests = (
        "assert f(1) == 2",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))\nassert True",
        "assert f(2) == 4",
    )
    cands = (
        Candidate(id="ok", text="", answer="def f(x):\n    return 2 * x", provenance=_PROV),
        Candidate(id="loop", text="", answer="while True:\n    pass", provenance=_PROV),
        Candidate(id="syntax", text="", answer="def f(:", provenance=_PROV),
        Candidate(id="none", text="no code", answer=None, provenance=_PROV),
    )
    from ponder.tools import SandboxLimits

    run = RunTests(RunTestsConfig(limits=SandboxLimits(timeout=2, cpu_seconds=5)))
    pool = await run(Pool(query="double it", tests=tests, candidates=cands))
    by_id = {c.id: c for c in pool.candidates}
    assert by_id["ok"].scores["tests"] == pytest.approx(2 / 3)  # the network test fails
    assert "did not finish" in (by_id["loop"].error or "")
    assert "does not load" in (by_id["syntax"].error or "")
    assert by_id["none"].error == "no code to test"
    assert all(c.scores["tests"] == 0.0 for c in pool.candidates if c.id != "ok")


def test_split_tests_keeps_imports_and_reports_garbage() -> None:
    tests, err = split_tests("import math\nassert math.sqrt(4) == 2\nassert 1 + 1 == 2")
    assert err is None
    assert tests == ["import math\nassert math.sqrt(4) == 2", "import math\nassert 1 + 1 == 2"]
    assert split_tests("def (")[1] is not None
    assert split_tests("import os")[1] == "the model wrote no test statements"


async def test_execution_vote_groups_code_by_behaviour() -> None:
    codes = [
        "def f(x):\n    return 4 * x + 20",
        "def f(y):\n    total = 20\n    return total + y * 4",  # same behaviour, other text
        "def f(x):\n    return 4 * x + 21",
        "def f(x):\n    raise SystemExit(3)",  # runs, but every probe raises
        "def f(:",  # does not load: abstains
    ]
    cands = tuple(
        Candidate(id=f"c{i}", text="", answer=c, provenance=_PROV) for i, c in enumerate(codes)
    )
    pool = Pool(query="4x+20", tests=("assert f(0) == 20", "assert f(5) == 40"), candidates=cands)
    assert probes_from_tests(pool.tests) == ["f(0)", "f(5)"]
    voted = await ExecutionVote()(pool)
    assert voted.final == codes[0]
    shares = [c.scores["behaviour_share"] for c in voted.candidates]
    assert shares == [0.4, 0.4, 0.2, 0.2, 0.0]
    assert (
        (await ExecutionVote()(Pool(query="q", candidates=cands)))
        .notes[-1]
        .startswith("execution_vote: no probes")
    )


async def test_best_of_n_by_mean_logprob(oracle_url: str, settings: Settings) -> None:
    async with Model(f"vllm:m@{oracle_url}", settings=settings) as m:
        pool = await Generate(m, GenerateConfig(n=4, logprobs=True))(Pool(query="Problem 0: go"))
    assert all("mean_logprob" in c.scores for c in pool.candidates)
    best = await BestOfN(BestOfNConfig(score="mean_logprob"))(pool)
    top = max(pool.candidates, key=lambda c: c.scores["mean_logprob"])
    assert best.final == top.answer


async def test_a_ranker_with_use_critiques_sees_them() -> None:
    from ponder.agents import Ranker, RankerConfig

    seen: list[str] = []

    def rank(messages: Any, _p: Any, _i: int) -> str:
        seen.append(messages[-1].content)
        return "Ranking: [2] > [1]"

    cands = [
        Candidate.read(
            id=f"c{i}", text=f"\\boxed{{{i}}}", provenance=Provenance(component="t"),
            critiques=(f"weak point {i}",),
        )
        for i in range(2)
    ]  # fmt: skip
    pool = Pool(query="q").with_candidates(cands)
    out = await Ranker(FakeModel(rank), RankerConfig(use_critiques=True))(pool)
    assert "Critique of candidate 1: weak point 0" in seen[0]
    assert [c.id for c in out.candidates] == ["c1", "c0"]
    await Ranker(FakeModel(rank))(pool)
    assert "Critique" not in seen[1]


def test_an_answer_cut_off_inside_its_box_is_no_answer() -> None:
    """A sample stopped by max_tokens while writing \\boxed{...} has no answer: not the
    half-written box, not an earlier box, not the text around it; so it never votes."""
    for text in ("so \\[\\boxed", "The answer is \\boxed{12", "x \\boxed{3} then \\boxed{4"):
        for kind in ("auto", "math", "number", "text"):
            assert extract_answer(text, kind) is None, (text, kind)
    assert extract_answer("first \\boxed{3}, finally \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"


async def test_a_cut_off_sample_does_not_vote() -> None:
    texts = iter(["\\boxed{7}", "\\boxed{7}", "I think \\boxed{9", "\\boxed{8", "x \\boxed"])
    m = FakeModel(lambda *_: next(texts))
    pool = await Generate(m, GenerateConfig(n=5))(Pool(query="q"))
    assert [c.answer for c in pool.candidates] == ["7", "7", None, None, None]
    voted = await Vote()(pool)
    assert voted.final == "7"
    assert voted.vote is not None


async def test_pools_and_results_render_in_a_notebook() -> None:
    from ponder.workflows import Workflow, WorkflowSpec

    m = FakeModel(["\\boxed{7}", "\\boxed{7}", "<b>boom</b> \\boxed{9}"])
    layers = [{"generate": {"n": 3}}, "vote"]
    spec = WorkflowSpec.model_validate(
        {"models": {"m": "vllm:fake@http://127.0.0.1:9/v1"}, "layers": layers}
    )
    result = await Workflow(spec, models={"m": m}).arun("What is <x>?")
    page = result._repr_html_()
    assert "Nodes run" in page
    assert "What is &lt;x&gt;?" in page  # escaped
    assert "&lt;b&gt;boom" in page
    assert "<b>boom</b>" not in page
    assert "Final answer</b>: <code>7</code>" in page
    assert "Vote</b>: 7 with 67% of 3" in page
    assert page.count("<tr") == 4  # the header and three candidates


# -- a component of one's own ---------------------------------------------------------------


class _ShoutConfig(_Config):
    suffix: str = "!"


class _Shout(ModelStep[_ShoutConfig]):
    name = "shout_test"

    async def __call__(self, pool: Pool) -> Pool:
        c = await self.model.generate(pool.query)
        return pool.model_copy(update={"final": c.text + self.config.suffix})


async def test_a_model_step_takes_its_model_and_config_and_names_the_config_class() -> None:
    fake = FakeModel(["hello"])
    assert (await _Shout(fake)(Pool(query="q"))).final == "hello!"
    assert _Shout(fake).config == _ShoutConfig()
    assert (await _Shout(fake, _ShoutConfig(suffix="?"))(Pool(query="q"))).final == "hello?"
    assert "config: '_ShoutConfig | None' = None" in str(inspect.signature(_Shout))
    assert "config: 'JudgeConfig | None' = None" in str(inspect.signature(Critic))
    with pytest.raises(ConfigurationError, match="_Shout takes a _ShoutConfig, got a JudgeConfig"):
        _Shout(fake, JudgeConfig())  # type: ignore[arg-type]

    class Unsaid(ModelStep):  # type: ignore[type-arg]
        name = "unsaid_test"

    with pytest.raises(ConfigurationError, match=r"write class Unsaid\(ModelStep\[ItsConfig\]\)"):
        Unsaid(fake)


async def test_a_model_step_passes_a_model_fault_on() -> None:
    fake = FakeModel([RateLimitError("slow down", retry_after=1.0)])
    with pytest.raises(RateLimitError):
        await _Shout(fake)(Pool(query="q"))
