"""Program-aided reasoning on the real local model, against chain-of-thought voting.

Qwen2.5-Coder-0.5B-Instruct (CPU, llama.cpp) writes a Python program per sample; the OS
sandbox runs it and the last line it prints is the answer (``ponder.agents.ProgramAided``).
Rows: PAL with one sample (the mean per-sample accuracy) and PAL with an execution vote
of 8 (a plurality over what the 8 programs printed; failed programs abstain), against
chain-of-thought one sample, SC@8 and SC@16 from ``real_model.py`` on **the same
problems** (its results files: 30 reasoning-gym ``basic_arithmetic`` and 20
``gsm_symbolic`` problems, seed 7). Accuracy, generated tokens per problem, 95% bootstrap
intervals over problems, and paired intervals for PAL + vote minus SC@16.

The mixed vote (``--mix 4,12``): 4 programs and 12 chain-of-thought samples, one
plurality over all 16 answers (``program`` then ``generate`` then ``vote``). Its setting
was chosen on the first 20 word problems (``--dev 20``) before the others were drawn, so
its interval against SC@16 is also printed for the held-out problems alone. It reuses
``real_model.py``'s samples (the same seeds, in the shared response cache).

Setup once: ``ponder models add qwen0.5b`` and the ``bench`` extra. Then:

    python benchmarks/real_model_pal.py                 # both tasks, ~20 min
    python benchmarks/real_model_pal.py --problems 2 --samples 2 --out /tmp/pal.json  # smoke

Programs are sampled once (temperature 0.7, seeds 0..7) into a response cache next to
this script, so reruns cost only the sandbox runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from real_model import batched, boot, graded, plurality, problems, progress

from ponder import Model, Settings
from ponder.agents import (
    Generate,
    GenerateConfig,
    Pool,
    ProgramAided,
    ProgramConfig,
    Vote,
    VoteConfig,
)

HERE = Path(__file__).parent
COT = {"arithmetic": HERE / "results" / "real_model.json",
       "word": HERE / "results" / "real_model_word.json"}  # fmt: skip
MIXED = "mixed vote: {} PAL + {} CoT"


def sc(p: dict[str, Any], k: int) -> float:
    """Self-consistency@k of one problem: plurality over disjoint groups of k samples,
    right when the winner is a right answer, averaged over the groups."""
    n = len(p["answers"])
    wins = []
    for g in range(0, n - k + 1, k):
        grp = range(g, g + k)
        winner = plurality([p["answers"][j] for j in grp])
        wins.append(
            any(p["right"][j] for j in grp if p["answers"][j] == winner) if winner else False
        )
    return statistics.fmean(wins) if wins else 0.0


async def run_task(
    task: str, args: argparse.Namespace, cot: dict[str, Any] | None
) -> dict[str, Any]:
    n_problems = args.problems or (cot["problems"] if cot else 30)
    ds, items = problems(n_problems, args.seed, task)
    settings = Settings.load(cache_path=Path(args.cache))
    max_tokens = 384 if task == "word" else 256
    cfg = ProgramConfig(n=args.samples, temperature=0.7, max_tokens=max_tokens, seed=0)
    n_prog, n_cot = args.mix
    # the mixed vote: the first programs and chain-of-thought samples of the rows above
    # (the same seeds, so served from the shared response cache), one plurality over all
    mix_prog = ProgramConfig(n=n_prog, temperature=0.7, max_tokens=max_tokens, seed=0)
    mix_cot = GenerateConfig(
        n=n_cot, temperature=0.7, max_tokens=max_tokens, seed=0, answer_kind="number"
    )
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(args.concurrent)
    finished = 0
    settings = batched(settings, args.samples * args.concurrent, max_tokens)

    async def one(model: Model, item: dict[str, Any]) -> dict[str, Any]:
        nonlocal finished
        async with gate:
            pool = await ProgramAided(model, cfg)(Pool(query=item["question"]))
            mixed = await ProgramAided(model, mix_prog)(Pool(query=item["question"]))
            mixed = await Vote(VoteConfig(answer_kind="number"))(
                await Generate(model, mix_cot)(mixed)
            )
        row = graded(ds, item, [c.answer for c in pool.candidates])
        winner = plurality(row["answers"])
        finished += 1
        progress(f"{task} {finished}/{len(items)}", row, t0)
        return {
            **row,
            "errors": [c.error for c in pool.candidates],
            "tokens_per_sample": pool.spend.all_completion_tokens / len(row["answers"]),
            "vote_right": winner is not None and ds.score_answer(winner, item) >= 1.0,
            "mixed_final": mixed.final,
            "mixed_right": mixed.final is not None and ds.score_answer(mixed.final, item) >= 1.0,
            "mixed_tokens": mixed.spend.all_completion_tokens,
        }

    async with Model(args.model, settings=settings) as model:
        per = list(await asyncio.gather(*(one(model, item) for item in items)))
    rng = random.Random(0)
    tok = statistics.fmean(p["tokens_per_sample"] for p in per)
    rows: dict[str, tuple[list[float], float]] = {
        "PAL, one sample": ([statistics.fmean(p["right"]) for p in per], tok),
        f"PAL + execution vote@{args.samples}": (
            [float(p["vote_right"]) for p in per],
            tok * args.samples,
        ),
        MIXED.format(*args.mix): (
            [float(p["mixed_right"]) for p in per],
            statistics.fmean(p["mixed_tokens"] for p in per),
        ),
    }
    if cot is not None:
        cp = cot["per_problem"][: len(per)]
        if [p["question"] for p in cp] != [p["question"] for p in per]:
            raise SystemExit(f"{COT[task]} holds other problems: rerun real_model.py first")
        ctok = statistics.fmean(p["tokens_per_sample"] for p in cp)
        rows["CoT, one sample"] = ([statistics.fmean(p["right"]) for p in cp], ctok)
        for k in (8, 16):
            rows[f"CoT self-consistency@{k}"] = ([sc(p, k) for p in cp], ctok * k)
    table = []
    for name, (accs, cost) in rows.items():
        lo, hi = boot(accs, rng)
        table.append({"technique": name, "accuracy": statistics.fmean(accs),
                      "ci95": [lo, hi], "tokens_per_problem": cost})  # fmt: skip
    paired = {}
    vote = rows[f"PAL + execution vote@{args.samples}"][0]
    mixed = rows[MIXED.format(*args.mix)][0]
    for other in ("CoT self-consistency@16", "CoT self-consistency@8", "CoT, one sample"):
        if other in rows:
            for name, accs in (("PAL vote", vote), ("mixed vote", mixed)):
                d = [a - b for a, b in zip(accs, rows[other][0], strict=True)]
                lo, hi = boot(d, rng)
                paired[f"{name} minus {other}"] = {"diff": statistics.fmean(d), "ci95": [lo, hi]}
    held = range(args.dev, len(per))  # the problems the mix was not chosen on
    if "CoT self-consistency@16" in rows and len(held) > 0:
        d = [mixed[i] - rows["CoT self-consistency@16"][0][i] for i in held]
        lo, hi = boot(d, rng)
        paired[f"mixed vote minus CoT self-consistency@16, held-out problems {args.dev + 1}-"
               f"{len(per)}"] = {"diff": statistics.fmean(d), "ci95": [lo, hi]}  # fmt: skip
    return {"task": task, "problems": len(per), "table": table, "paired": paired,
            "per_problem": per}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tasks", default="arithmetic,word")
    ap.add_argument("--problems", type=int, default=None, help="default: as real_model.py's")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default="local:qwen0.5b")
    ap.add_argument(
        "--mix",
        default="4,12",
        help="programs,CoT samples of the mixed vote (chosen on the first --dev word problems)",
    )
    ap.add_argument("--dev", type=int, default=20, help="problems the mix was chosen on")
    ap.add_argument("--concurrent", type=int, default=3, help="problems in flight")
    ap.add_argument(
        "--cache",
        default=str(HERE / ".cache" / "real_model.sqlite"),
        help="real_model.py's response cache: the mixed vote reuses its samples",
    )
    ap.add_argument("--out", default=str(HERE / "results" / "real_model_pal.json"))
    args = ap.parse_args()
    args.mix = tuple(int(x) for x in args.mix.split(","))
    out_path = Path(args.out)
    results = []
    for task in args.tasks.split(","):
        cot = json.loads(COT[task].read_text()) if COT[task].is_file() else None
        if cot is not None and args.problems and args.problems > cot["problems"]:
            cot = None
        results.append(asyncio.run(run_task(task, args, cot)))
    out = {"model": args.model, "samples": args.samples, "seed": args.seed,
           "command": " ".join(["python", *sys.argv]), "tasks": results}  # fmt: skip
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    for r in results:
        print(f"\n{args.model}, {r['task']}, {r['problems']} problems")
        print(f"{'technique':<32}{'accuracy':>9}{'95% CI':>16}{'tokens':>9}")
        for row in r["table"]:
            lo, hi = row["ci95"]
            print(f"{row['technique']:<32}{row['accuracy']:>9.3f}   [{lo:.3f}, {hi:.3f}]"
                  f"{row['tokens_per_problem']:>9.0f}")  # fmt: skip
        for name, d in r["paired"].items():
            lo, hi = d["ci95"]
            print(f"{name}: {d['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]")


if __name__ == "__main__":
    main()
