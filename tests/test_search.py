"""Step-level search on the stand-in oracle's multi-step problems (process rewards)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ponder import ConfigurationError, Model, Settings
from ponder.agents import (
    MCTS,
    BeamSearch,
    BeamSearchConfig,
    FirstFinish,
    FirstFinishConfig,
    Generate,
    GenerateConfig,
    MCTSConfig,
    ParticleFilter,
    ParticleFilterConfig,
    Pool,
    ProcessRewardModel,
    StepConfig,
    Vote,
    parse_step_scores,
)
from ponder.testing import FakeModel, StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank

ORACLE = OracleConfig(accuracy={"m": 0.5}, distractors=3)
BANK = ProblemBank(ORACLE.bank_seed, ORACLE.distractors)
IDS = BANK.ids("multistep", 30)


@pytest_asyncio.fixture
async def model(settings: Settings) -> AsyncIterator[Model]:
    async with (
        StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s,
        Model(f"vllm:m@{s.base_url}", settings=settings) as m,
    ):
        yield m


async def _accuracy(model: Model, make: object) -> float:
    right = 0
    for pid in IDS:
        p = BANK.problem(pid)
        pool = await make(Pool(query=p.question))  # type: ignore[operator]
        right += p.is_correct(pool.final)
    return right / len(IDS)


def test_step_scores_parse_and_clip() -> None:
    assert parse_step_scores("ok\nStep scores: 0.9, 0.12, 1.5") == [0.9, 0.12, 1.0]
    assert parse_step_scores("no scores here") is None


async def test_search_beats_single_samples_on_multistep_problems(model: Model) -> None:
    prm = ProcessRewardModel(model)

    async def single(pool: Pool) -> Pool:
        return await Vote()(await Generate(model, GenerateConfig(n=1))(pool))

    base = await _accuracy(model, single)
    beam = await _accuracy(model, BeamSearch(model, prm, BeamSearchConfig(beam_width=2)))
    pf = await _accuracy(model, ParticleFilter(model, prm, ParticleFilterConfig(particles=4)))
    mcts = await _accuracy(model, MCTS(model, prm, MCTSConfig(iterations=8, expansions=2)))
    assert base < 0.75  # one sample is right about half the time
    assert beam >= 0.85
    assert pf >= 0.85
    assert mcts >= 0.7
    assert min(beam, pf, mcts) > base + 0.15


async def test_search_results_are_deterministic_and_recorded(model: Model) -> None:
    prm = ProcessRewardModel(model)
    p = BANK.problem(IDS[0])
    search = BeamSearch(model, prm, BeamSearchConfig(beam_width=2, expansions=2))
    a = await search(Pool(query=p.question))
    b = await search(Pool(query=p.question))
    assert a.final == b.final
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
    assert a.candidates[0].scores["prm"] >= a.candidates[-1].scores["prm"]
    assert a.spend.requests > 0
    rollout = await MCTS(model, prm, MCTSConfig(iterations=4, value="rollout"))(
        Pool(query=p.question)
    )
    assert rollout.final is not None


async def test_unparseable_step_scores_are_noted_not_fatal(model: Model) -> None:
    babble = ProcessRewardModel(FakeModel(["I like all the steps."]))
    p = BANK.problem(IDS[1])
    pool = await BeamSearch(model, babble, BeamSearchConfig(step=StepConfig(max_steps=6)))(
        Pool(query=p.question)
    )
    assert pool.final is not None
    assert any("step scores did not parse" in n for n in pool.notes)


async def test_search_needs_a_provider_that_continues_a_prefill(settings: Settings) -> None:
    m = Model("ollama:llama3@http://127.0.0.1:9/v1", settings=settings)
    with pytest.raises(ConfigurationError, match="prefill"):
        await BeamSearch(m, ProcessRewardModel(m))(Pool(query="Problem 1: x"))


async def test_first_finish_keeps_the_fastest_and_cancels_the_rest(settings: Settings) -> None:
    cfg = StandinConfig(time_scale=0.02, fault_slow=0.5, slow_factor=50, oracle=ORACLE)
    async with StandinServer(cfg) as s, Model(f"vllm:m@{s.base_url}", settings=settings) as m:
        p = BANK.problem(BANK.ids("arithmetic", 1)[0])
        pool = await FirstFinish(m, FirstFinishConfig(launch=8, keep=3))(Pool(query=p.question))
        assert len(pool.candidates) == 3
        assert pool.final is not None
        assert "cancelled 5" in pool.notes[-1]
        for _ in range(300):  # the server notices the closed connections
            if s.stats.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        # the slow stragglers were not waited for: their connections were closed
        assert s.stats.cancelled == s.stats.faults["slow"] >= 1
        assert s.stats.completed + s.stats.cancelled == 8


async def test_one_search_component_twice_at_once_gives_each_run_its_own_notes(
    model: Model,
) -> None:
    """A component serves every run of a compiled workflow; per-call counts live in the
    call (the 'N step scores did not parse' note once summed across concurrent runs)."""
    babble = ProcessRewardModel(FakeModel(["I like all the steps."]))
    search = BeamSearch(model, babble, BeamSearchConfig(step=StepConfig(max_steps=4)))
    p = BANK.problem(IDS[2])
    alone = await search(Pool(query=p.question))
    together = await asyncio.gather(*(search(Pool(query=p.question)) for _ in range(3)))
    noted = [n for n in alone.notes if "did not parse" in n]
    assert noted
    for run in together:
        assert [n for n in run.notes if "did not parse" in n] == noted
        assert run.final == alone.final
