"""An Archon-style stack, a vote and a step-level search on the stand-in server.

Run: python examples/reasoning.py
"""

from __future__ import annotations

import asyncio

from ponder import Model
from ponder.agents import (
    BeamSearch,
    BeamSearchConfig,
    BestOfN,
    BestOfNConfig,
    Critic,
    Fuser,
    FuserConfig,
    Generate,
    GenerateConfig,
    ModelVerifier,
    Pool,
    ProcessRewardModel,
    Ranker,
    RankerConfig,
    Vote,
)
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank


async def main() -> None:
    bank = ProblemBank(0)
    arithmetic = bank.problem(bank.ids("arithmetic", 1)[0])
    multistep = bank.problem(bank.ids("multistep", 1)[0])
    async with (
        StandinServer(StandinConfig(time_scale=0.01)) as server,
        Model(f"vllm:weak@{server.base_url}", cache=False) as m,
    ):
        voted = await Vote()(
            await Generate(m, GenerateConfig(n=16))(Pool(query=arithmetic.question))
        )
        print(f"vote of 16:   {voted.final}  (truth {arithmetic.answer})")

        pool = await Generate(m, GenerateConfig(n=8))(Pool(query=arithmetic.question))
        pool = await Critic(m)(pool)
        pool = await Ranker(m, RankerConfig(top_k=4))(pool)
        pool = await Fuser(m, FuserConfig(n=3))(pool)
        pool = await ModelVerifier(m)(pool)
        pool = await BestOfN(BestOfNConfig(score="verifier"))(pool)
        print(f"archon stack: {pool.final}  ({pool.spend.total_tokens} tokens)")

        search = BeamSearch(m, ProcessRewardModel(m), BeamSearchConfig(beam_width=2))
        found = await search(Pool(query=multistep.question))
        print(f"beam search:  {found.final}  (truth {multistep.answer})")
        print(found.candidates[0].text)


if __name__ == "__main__":
    asyncio.run(main())
