"""Compute-adaptive components: each decision rule on scripted inputs (exact decisions),
then the components end to end on fakes and on the stand-in oracle."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from conftest import cand

from ponder import GenerateParams, Message, Model, Settings
from ponder.agents import (
    BatchAdaptive,
    BatchAdaptiveConfig,
    Cascade,
    CascadeConfig,
    ConfidenceVote,
    EarlyRejection,
    EarlyRejectionConfig,
    Generate,
    GenerateConfig,
    Pool,
    ProcessRewardModel,
    SpeculativeConfig,
    SpeculativeReasoning,
    accept_step,
    cascade_accepts,
    confidence_weight,
    next_to_sample,
    survivors,
    verifier_quality,
)
from ponder.errors import ConfigurationError
from ponder.testing import FakeModel, StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank

# -- decision rules ---------------------------------------------------------------------------


def test_cascade_accepts_on_agreement_probability_and_verifier() -> None:
    two_of_three = [cand("3", 0), cand("3", 1), cand("4", 2)]
    ok, conf = cascade_accepts(two_of_three, "agreement", 0.6)
    assert ok
    assert conf == pytest.approx(2 / 3)
    assert cascade_accepts(two_of_three, "agreement", 0.7)[0] is False
    probable = [cand("3", 0, mean_logprob=math.log(0.9)), cand("3", 1, mean_logprob=math.log(0.5))]
    ok, conf = cascade_accepts(probable, "probability", 0.69)
    assert ok
    assert conf == pytest.approx(0.7)
    checked = [cand("3", 0, verifier=1.0), cand("3", 1, verifier=0.0), cand("4", 2, verifier=1.0)]
    ok, conf = cascade_accepts(checked, "verifier", 0.5)
    assert not ok
    assert conf == pytest.approx(1 / 3)
    assert cascade_accepts([cand(None)], "agreement", 0.1) == (False, 0.0)


def test_next_to_sample_picks_the_least_settled_question() -> None:
    # P(settled): [3, 0] -> 15/16, [1, 1] -> 1/2, [2, 0] -> 7/8
    tallies, drawn = [[3], [1, 1], [2]], [3, 2, 2]
    assert next_to_sample(tallies, drawn, max_samples=16, confidence=0.95) == 1
    # fewest samples first, even when another question is less settled
    assert next_to_sample([[1, 1, 1], [2]], [3, 2], max_samples=16, confidence=0.95) == 1
    assert next_to_sample(tallies, drawn, max_samples=3, confidence=0.95) == 1
    assert next_to_sample([[3], [1, 1]], [3, 2], max_samples=2, confidence=0.95) is None
    assert next_to_sample([[4], [5]], [4, 5], max_samples=16, confidence=0.95) is None
    assert next_to_sample([[2], [2]], [2, 2], max_samples=16, confidence=0.95) == 0  # ties


def test_confidence_weight_survivors_and_step_acceptance() -> None:
    assert confidence_weight(cand("1", mean_logprob=-0.5)) == pytest.approx(math.exp(-0.5))
    assert confidence_weight(cand("1")) == 1.0
    assert confidence_weight(cand("1", verifier=0.5), "verifier_probability") == 0.5
    assert survivors([0.9, 0.1, 0.5, 0.5], keep=0.5, min_keep=1) == [0, 2]
    assert survivors([0.9, 0.1, 0.5, 0.5], keep=0.5, min_keep=3) == [0, 2, 3]
    assert survivors([0.2], keep=0.1, min_keep=2) == [0]
    assert accept_step([0.9, 0.7], 0.6)
    assert not accept_step([0.9, 0.5], 0.6)
    assert not accept_step(None, 0.6)
    assert not accept_step([], 0.6)


def test_verifier_quality_and_its_ceiling() -> None:
    q = verifier_quality(
        [True, True, False, False, True, None], [True, False, False, True, True, True]
    )
    assert (q.true_positives, q.false_positives, q.true_negatives, q.false_negatives) == (
        2,
        1,
        1,
        1,
    )
    assert q.abstained == 1
    assert q.precision == pytest.approx(2 / 3)
    assert q.recall == pytest.approx(2 / 3)
    assert q.false_positive_rate == pytest.approx(1 / 2)
    # a generator right 40% of the time, filtered by this verifier
    assert q.ceiling(0.4) == pytest.approx(0.4 * (2 / 3) / (0.4 * (2 / 3) + 0.6 * 0.5))


# -- components on fakes ------------------------------------------------------------------------


def scripted(answers: dict[str, list[str]]) -> FakeModel:
    """Question -> the answers of samples 0, 1, 2, ... (by seed)."""

    def respond(messages: Sequence[Message], p: GenerateParams, i: int) -> str:
        seq = answers[messages[-1].content]
        return f"\\boxed{{{seq[((p.seed or 0) + i) % len(seq)]}}}"

    return FakeModel(respond)


async def test_cascade_escalates_only_the_unsure_question() -> None:
    cheap = scripted({"easy": ["1"], "hard": ["1", "2", "3"]})
    strong = scripted({"easy": ["9"], "hard": ["2"]})
    cascade = Cascade([cheap, strong], CascadeConfig(samples=3, threshold=0.67))
    easy = await cascade(Pool(query="easy"))
    hard = await cascade(Pool(query="hard"))
    assert easy.final == "1"
    assert len(strong.calls) == 1  # only the hard question reached the strong model
    assert hard.final == "2"
    assert "escalating" in hard.notes[0]
    with pytest.raises(ConfigurationError, match="verifier="):
        Cascade([cheap], CascadeConfig(signal="verifier"))


async def test_batch_adaptive_gives_samples_to_the_unsettled_question() -> None:
    model = scripted({"easy": ["4"], "hard": ["1", "2"]})
    runner = BatchAdaptive(
        Generate(model, GenerateConfig(n=1)),
        BatchAdaptiveConfig(budget=16, min_samples=2, max_samples=10, confidence=0.95),
    )
    easy, hard = await runner.run([Pool(query="easy"), Pool(query="hard")])
    # 4 identical answers settle at 0.95 (P = 31/32); the alternating one never settles
    assert len(easy.candidates) == 4
    assert len(hard.candidates) == 10
    assert easy.final == "4"
    with pytest.raises(ConfigurationError, match="cannot give"):
        await BatchAdaptive(Generate(model), BatchAdaptiveConfig(budget=3, min_samples=2)).run(
            [Pool(query="easy"), Pool(query="hard")]
        )


async def test_confidence_vote_lets_a_probable_minority_win() -> None:
    pool = Pool(
        query="q",
        candidates=(
            cand("5", 0, mean_logprob=-3.0),
            cand("5", 1, mean_logprob=-3.0),
            cand("7", 2, mean_logprob=-0.05),
        ),
    )
    out = await ConfidenceVote()(pool)
    assert out.final == "7"
    assert out.candidates[2].scores["confidence"] == pytest.approx(math.exp(-0.05))


# -- on the stand-in oracle ---------------------------------------------------------------------

ORACLE = OracleConfig(accuracy={"weak": 0.5, "strong": 0.9}, step_noise=0.05)
BANK = ProblemBank(ORACLE.bank_seed, ORACLE.distractors)


@pytest_asyncio.fixture
async def models() -> AsyncIterator[tuple[Model, Model]]:
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        settings = Settings.load(cache=False)
        async with (
            Model(f"vllm:weak@{s.base_url}", settings=settings) as weak,
            Model(f"vllm:strong@{s.base_url}", settings=settings) as strong,
        ):
            yield weak, strong


async def test_early_rejection_stops_weak_partials(models: tuple[Model, Model]) -> None:
    weak, strong = models
    q = BANK.problem(BANK.ids("multistep", 1)[0])
    er = EarlyRejection(
        weak, ProcessRewardModel(strong), EarlyRejectionConfig(samples=8, checkpoint_steps=1)
    )
    out = await er(Pool(query=q.question))
    note = out.notes[-1]
    finished = int(note.split(" finished")[0].split()[-1])
    stopped = int(note.split(", ")[1].split()[0])
    assert finished + stopped == 8
    assert stopped >= 4  # keep 50% at each checkpoint, at least 2
    assert all(c.answer is not None for c in out.candidates)


async def test_speculative_reasoning_reports_accepted_steps(models: tuple[Model, Model]) -> None:
    weak, strong = models
    q = BANK.problem(BANK.ids("multistep", 1, start=8)[0])
    spec = SpeculativeReasoning(weak, strong, ProcessRewardModel(strong), SpeculativeConfig())
    out = await spec(Pool(query=q.question))
    assert out.final is not None
    assert "drafted steps accepted" in out.notes[-1]
    assert out.ledger[f"speculative:{weak.id}"].completion_tokens > 0
    steps = out.candidates[0].text.count("Step ")
    assert steps == len(q.steps)


def _row(answers: list[str | None], right: str) -> dict[str, object]:
    cands = [{"answer": a, "correct": a == right} for a in answers]
    return {"workflow": "cheap", "dataset": "d", "final": answers[0],
            "correct": answers[0] == right, "candidates": cands, "tokens": 10, "cost": 0.0,
            "latency": 0.1}  # fmt: skip


def test_cascade_calibration_picks_the_lowest_threshold_reaching_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ponder.apps.cli import main
    from ponder.eval import calibrate_cascade

    rows = [
        _row(["4", "4", "4", "4"], "4"),  # agreement 1.0, right
        _row(["5", "5", "5", "5"], "5"),  # 1.0, right
        _row(["7", "7", "7", "1"], "7"),  # 0.75, right
        _row(["2", "2", "2", "9"], "9"),  # 0.75, wrong
        _row(["3", "3", "8", "6"], "3"),  # 0.5, right
        _row(["1", "2", None, None], "2"),  # 0.5 of the answered, tie -> first ("1"): wrong
        _row([None, None], "0"),  # no answer: never kept
    ]
    cal = calibrate_cascade(rows, target=0.75)
    assert [(p.threshold, p.kept) for p in cal.points] == [(0.5, 6), (0.75, 4), (1.0, 2)]
    assert [p.kept_accuracy for p in cal.points] == [4 / 6, 3 / 4, 1.0]
    assert cal.threshold == 0.75
    assert calibrate_cascade(rows, target=0.6).threshold == 0.5
    assert calibrate_cascade([_row(["1", "1"], "2")], target=0.5).threshold is None
    with pytest.raises(ValueError, match="target accuracy"):
        calibrate_cascade(rows, target=1.5)

    out = tmp_path / "cheap.jsonl"
    out.write_text("".join(json.dumps({"id": str(i), **r}) + "\n" for i, r in enumerate(rows)))
    assert main(["eval-report", str(out), "--calibrate-cascade", "0.75"]) == 0
    assert "set the cascade's threshold to 0.750: it keeps 57%" in capsys.readouterr().out
    assert main(["eval-report", str(out), "--calibrate-cascade", "2"]) == 1
