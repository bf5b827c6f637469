"""Compute-adaptive techniques against their fixed-compute baselines, on the stand-in
oracle: a cheap weak model and a strong one priced 20x higher.

Oracle: ``weak`` right with p=0.7, ``strong`` with p=0.9 on average, each problem's
difficulty spread by +-0.3 (``difficulty_spread``: real sets mix easy and hard questions),
3 distractors; prices per million tokens: weak $0.10 in / $0.40 out, strong $2.00 /
$8.00. Every row runs on the same problems; cost is what the price table bills.

    python benchmarks/adaptive.py                 # 300 problems
    python benchmarks/adaptive.py --problems 100 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ponder import Model, Settings
from ponder.agents import (
    BatchAdaptive,
    BatchAdaptiveConfig,
    Cascade,
    CascadeConfig,
    EarlyRejection,
    EarlyRejectionConfig,
    Generate,
    GenerateConfig,
    ModelVerifier,
    Pool,
    ProcessRewardModel,
    SpeculativeConfig,
    SpeculativeReasoning,
    Vote,
    verifier_quality,
)
from ponder.backends import Price, PriceTable
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank

P_WEAK, P_STRONG = 0.7, 0.9
ORACLE = OracleConfig(
    accuracy={"weak": P_WEAK, "strong": P_STRONG},
    distractors=3,
    step_noise=0.1,
    difficulty_spread=0.3,
)
PRICES = PriceTable({"vllm:weak": Price(0.10, 0.40), "vllm:strong": Price(2.00, 8.00)})

Run = Callable[[Pool], Awaitable[Pool]]


async def evaluate(
    name: str, task: str, bank: ProblemBank, ids: list[int], run: Run
) -> dict[str, Any]:
    pools = await asyncio.gather(*(run(Pool(query=bank.problem(i).question)) for i in ids))
    right = sum(bank.problem(i).is_correct(p.final) for i, p in zip(ids, pools, strict=True))
    return {
        "technique": name,
        "task": task,
        "accuracy": right / len(ids),
        "cost_per_1k": 1000 * sum(p.spend.cost for p in pools) / len(ids),
        "tokens": sum(p.spend.completion_tokens for p in pools) / len(ids),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    bank = ProblemBank(ORACLE.bank_seed, ORACLE.distractors)
    arith = bank.ids("arithmetic", args.problems)
    multi = bank.ids("multistep", args.problems)
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as s:
        settings = Settings.load(cache=False, max_retries=0)
        async with (
            Model(f"vllm:weak@{s.base_url}", settings=settings, prices=PRICES) as weak,
            Model(f"vllm:strong@{s.base_url}", settings=settings, prices=PRICES) as strong,
        ):

            def sc(model: Model, n: int) -> Run:
                async def run(p: Pool) -> Pool:
                    return await Vote()(await Generate(model, GenerateConfig(n=n))(p))

                return run

            # 1. cascade vs the strong model's self-consistency
            base = await evaluate("strong, vote of 5", "arithmetic", bank, arith, sc(strong, 5))
            cascade = Cascade([weak, strong], CascadeConfig(samples=5, threshold=0.8))  # 4 of 5
            casc = await evaluate(
                "cascade weak(5) -> strong(5)", "arithmetic", bank, arith, cascade
            )
            rows += [
                await evaluate("strong, one sample", "arithmetic", bank, arith, sc(strong, 1)),
                base,
                casc,
            ]
            extra["cascade"] = {
                "cost_saved": 1 - casc["cost_per_1k"] / base["cost_per_1k"],
                "accuracy_lost": base["accuracy"] - casc["accuracy"],
            }

            # 2. adaptive sample counts across the batch vs fixed counts per question: the
            # adaptive run stops each question when its leader is settled (no budget cut);
            # its baseline is the cheapest fixed vote that reaches its accuracy (-1 point)
            budget = 20 * len(arith)
            batch = BatchAdaptive(
                Generate(weak, GenerateConfig(n=1)),
                BatchAdaptiveConfig(budget=budget, min_samples=2, max_samples=20, confidence=0.9),
            )
            done = await batch.run([Pool(query=bank.problem(i).question) for i in arith])
            right = sum(
                bank.problem(i).is_correct(p.final) for i, p in zip(arith, done, strict=True)
            )
            adaptive = {
                "technique": "weak, batch-adaptive (stop when settled)",
                "task": "arithmetic",
                "accuracy": right / len(arith),
                "cost_per_1k": 1000 * sum(p.spend.cost for p in done) / len(arith),
                "tokens": sum(p.spend.completion_tokens for p in done) / len(arith),
                "samples": sum(len(p.candidates) for p in done) / len(arith),
            }
            fixed_rows = [
                await evaluate(f"weak, vote of {k}", "arithmetic", bank, arith, sc(weak, k))
                for k in (9, 13, 17, 21)
            ]
            rows += [*fixed_rows, adaptive]
            matched = next(
                (f for f in fixed_rows if f["accuracy"] >= adaptive["accuracy"] - 0.01),
                fixed_rows[-1],
            )
            extra["batch_adaptive"] = {
                "baseline": matched["technique"],
                "cost_saved": 1 - adaptive["cost_per_1k"] / matched["cost_per_1k"],
                "accuracy_lost": matched["accuracy"] - adaptive["accuracy"],
                "samples_per_question": adaptive["samples"],
            }

            # 3. early rejection vs finishing every sample (multi-step problems)
            rows.append(
                await evaluate(
                    "weak, vote of 8 (finish all)", "multistep", bank, multi, sc(weak, 8)
                )
            )
            er = EarlyRejection(  # the weak model also scores: a cheap reward model
                weak,
                ProcessRewardModel(weak),
                EarlyRejectionConfig(samples=8, checkpoint_steps=2),
            )
            rows.append(await evaluate("weak, early rejection of 8", "multistep", bank, multi, er))

            # 4. speculative reasoning vs the strong model writing every step
            spec = SpeculativeReasoning(
                weak, strong, ProcessRewardModel(strong), SpeculativeConfig()
            )
            rows.append(
                await evaluate("strong, one sample", "multistep", bank, multi, sc(strong, 1))
            )
            rows.append(
                await evaluate("speculative weak -> strong", "multistep", bank, multi, spec)
            )

            # 5. the verifier's measured quality, and the ceiling it puts on resampling
            verdicts, truth = [], []
            verifier = ModelVerifier(strong)
            for i in arith[:100]:
                p = await Generate(weak, GenerateConfig(n=1))(Pool(query=bank.problem(i).question))
                p = await verifier(p)
                c = p.candidates[0]
                verdicts.append(next(iter(c.verdicts.values()), None))
                truth.append(bank.problem(i).is_correct(c.answer))
            q = verifier_quality(verdicts, truth)
            extra["verifier"] = {
                "precision": q.precision,
                "recall": q.recall,
                "false_positive_rate": q.false_positive_rate,
                "ceiling_at_p_weak": q.ceiling(P_WEAK),
            }
    if args.json:
        print(json.dumps({"rows": rows, **extra}, indent=2))
        return
    print(f"stand-in oracle: weak p={P_WEAK}, strong p={P_STRONG}, {args.problems} problems; "
          "cost in $ per 1,000 questions (strong priced 20x weak)")  # fmt: skip
    print(f"{'technique':<44}{'task':<12}{'accuracy':>9}{'$/1k q':>10}{'gen tok':>9}")
    for r in rows:
        print(
            f"{r['technique']:<44}{r['task']:<12}{r['accuracy']:>9.3f}"
            f"{r['cost_per_1k']:>10.3f}{r['tokens']:>9.0f}"
        )
    for name in ("cascade", "batch_adaptive"):
        e = extra[name]
        against = f" (against {e['baseline']})" if "baseline" in e else ""
        print(
            f"{name}{against}: {e['cost_saved']:.0%} of the baseline's cost saved, "
            f"{100 * e['accuracy_lost']:+.1f} points of accuracy lost (target: >= 40%, <= 1)"
        )
    v = extra["verifier"]
    print(
        f"verifier (strong judging weak answers): precision {v['precision']:.2f}, recall "
        f"{v['recall']:.2f}, false-positive rate {v['false_positive_rate']:.2f}; resampling "
        f"the weak model until it accepts is capped at {v['ceiling_at_p_weak']:.2f} accuracy"
    )


if __name__ == "__main__":
    asyncio.run(main())
