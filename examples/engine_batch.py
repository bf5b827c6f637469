"""Many queries through one engine: shared endpoint limits, one budget for the batch.

Runs 32 questions of an Archon-style stack (six generators of one model -> fuse -> vote)
concurrently against the stand-in server. The engine owns the model and its endpoint, so
the endpoint's limit of 8 in flight holds across all 32 runs; a budget shared by every
run stops the batch once it is spent (each call reserves before it is sent); six slots of
one model give six distinct candidates; and a rerun is served from the cache, reporting
the tokens it saved.

    python examples/engine_batch.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from ponder import Budget, Settings
from ponder.engine import Engine
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import ProblemBank
from ponder.workflows import Workflow, WorkflowSpec


async def main() -> None:
    bank = ProblemBank()
    questions = [bank.problem(i).question for i in bank.ids("arithmetic", 32)]
    async with StandinServer(StandinConfig(time_scale=0.01)) as server:
        spec = WorkflowSpec.model_validate(
            {
                "name": "moa",
                "models": {
                    "m": {
                        "ref": f"vllm:strong@{server.base_url}",
                        "max_concurrency": 8,
                        "price": [0.5, 1.5],
                    },
                },
                "layers": [
                    [{"generate": {"n": 1, "temperature": 0.7}} for _ in range(6)],
                    {"fuse": {}},
                    "vote",
                ],
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(cache_path=Path(tmp) / "cache.sqlite")
            async with Engine(settings) as engine:
                wf = Workflow(spec, engine=engine)
                results = await asyncio.gather(*(wf.arun(q) for q in questions))
                first = results[0].output
                print(f"32 runs; peak in flight at the server: {server.stats.max_concurrency}")
                fused = first.candidates[0]
                print(f"run 0 fused {len(fused.provenance.parents)} candidates:")
                print("  " + ", ".join(fused.provenance.parents))
                spent = sum(r.output.spend.cost for r in results)
                print(
                    f"answers: {sum(r.output.final is not None for r in results)}/32, ${spent:.4f}"
                )

                again = await wf.arun(questions[0])
                s = again.output.spend
                print(
                    f"rerun: {s.total_tokens} tokens generated, {s.cached_tokens} from the "
                    f"cache (saved ${s.saved_cost:.5f})"
                )

                budget = Budget(max_tokens=3_000)  # one budget for a whole second batch
                more = [bank.problem(i).question for i in bank.ids("arithmetic", 32, start=64)]
                batch = await asyncio.gather(
                    *(wf.arun(q, budgets=[budget]) for q in more), return_exceptions=True
                )
                stopped = sum(1 for r in batch if not isinstance(r, BaseException) and r.failures)
                print(
                    f"budgeted batch: {budget.spent.usage.total_tokens} tokens spent of 3000 "
                    f"({stopped} runs stopped by the budget)"
                )


if __name__ == "__main__":
    asyncio.run(main())
