"""The model layer against the local stand-in server: fan-out, cache, budget.

Run: python examples/model_layer.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from ponder import Budget, BudgetExceeded, Model, Settings
from ponder.testing import StandinConfig, StandinServer


async def main() -> None:
    settings = Settings.load(cache_path=Path(tempfile.mkdtemp()) / "cache.sqlite")
    async with StandinServer(StandinConfig(time_scale=0.05)) as server:
        async with Model(f"vllm:strong@{server.base_url}", settings=settings) as model:
            c = await model.generate("Problem 0: What is it?", n=8, temperature=0.8, seed=1)
            print("first run :", c.requests, "request(s),", c.usage.total_tokens, "tokens")
            c = await model.generate("Problem 0: What is it?", n=8, temperature=0.8, seed=1)
            print(
                "second run:",
                c.requests,
                "request(s), all cached:",
                all(ch.cached for ch in c.choices),
            )
        budget = Budget(max_requests=2)
        async with Model(
            f"llamacpp:weak@{server.base_url}", settings=settings, budget=budget
        ) as model:
            try:
                await model.generate("Problem 1: go", n=5)
            except BudgetExceeded as e:
                print("budget    :", e.spent)


if __name__ == "__main__":
    asyncio.run(main())
