"""Compute-adaptive reasoning on the stand-in server: a cascade, one sample budget across
a batch, early rejection and speculative reasoning.

Run: python examples/adaptive.py
"""

from __future__ import annotations

import asyncio

from ponder import Model, Settings
from ponder.agents import (
    BatchAdaptive,
    BatchAdaptiveConfig,
    Cascade,
    CascadeConfig,
    EarlyRejection,
    Generate,
    Pool,
    ProcessRewardModel,
    SpeculativeReasoning,
)
from ponder.backends import Price, PriceTable
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank

PRICES = PriceTable({"vllm:weak": Price(0.10, 0.40), "vllm:strong": Price(2.00, 8.00)})


async def main() -> None:
    oracle = OracleConfig(accuracy={"weak": 0.7, "strong": 0.9}, difficulty_spread=0.3)
    bank = ProblemBank()
    async with StandinServer(StandinConfig(time_scale=0, oracle=oracle)) as s:
        settings = Settings.load(cache=False)
        async with (
            Model(f"vllm:weak@{s.base_url}", settings=settings, prices=PRICES) as weak,
            Model(f"vllm:strong@{s.base_url}", settings=settings, prices=PRICES) as strong,
        ):
            cascade = Cascade([weak, strong], CascadeConfig(samples=5, threshold=0.8))
            for pid in bank.ids("arithmetic", 4):
                out = await cascade(Pool(query=bank.problem(pid).question))
                print(f"problem {pid}: {out.notes[-1]} (${out.spend.cost:.6f})")

            questions = [Pool(query=bank.problem(i).question) for i in bank.ids("arithmetic", 6)]
            batch = BatchAdaptive(Generate(weak), BatchAdaptiveConfig(budget=48, min_samples=2))
            for pool in await batch.run(questions):
                print(pool.notes[-1])

            step_problem = bank.problem(bank.ids("multistep", 1)[0]).question
            er = await EarlyRejection(weak, ProcessRewardModel(weak))(Pool(query=step_problem))
            print(er.notes[-1])
            spec = SpeculativeReasoning(weak, strong, ProcessRewardModel(strong))
            print((await spec(Pool(query=step_problem))).notes[-1])


if __name__ == "__main__":
    asyncio.run(main())
