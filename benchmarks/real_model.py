"""Real-model evidence: does Qwen2.5-Coder-0.5B-Instruct (CPU, llama.cpp) gain from
sampling and voting? Accuracy and generated tokens per technique, with 95% intervals.

Setup once: ``ponder models add qwen0.5b`` (verified fixture) and ``pip install
reasoning-gym matplotlib`` (the ``bench`` extra). Then:

    python benchmarks/real_model.py --plot docs/real-model.png   # 30 problems, ~35 min
    python benchmarks/real_model.py --task word --plot docs/real-model-word.png  # ~50 min
    python benchmarks/real_model.py --problems 3 --samples 2 --max-tokens 64   # smoke

Design: for every problem, 16 samples are drawn once (temperature 0.7, seeds 0..15;
sample ``i`` always uses seed ``i``) and kept in a response cache next to this script,
so reruns cost nothing. From them: one sample = the mean per-sample accuracy; SC@k = a
plurality vote over disjoint groups of k samples, averaged over the groups; adaptive
voting draws samples one by one (served from the cache) until the leader is settled.
Intervals: 2,000 bootstrap resamples over problems (paired for differences). Problems:
reasoning-gym ``basic_arithmetic`` (2-3 terms of 1-2 digits, + - *, seed 7) or, with
``--task word``, ``gsm_symbolic`` (GSM8K-style word problems, seed 7). Answers are graded
by reasoning-gym's own ``score_answer`` on the extracted ``\\boxed{}`` answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ponder import Model, Settings
from ponder.agents import (
    AdaptiveVote,
    AdaptiveVoteConfig,
    Generate,
    GenerateConfig,
    Pool,
)

HERE = Path(__file__).parent


TASKS = {
    "arithmetic": "reasoning-gym basic_arithmetic (2-3 terms, 1-2 digits, + - *)",
    "word": "reasoning-gym gsm_symbolic (GSM8K-style word problems)",
}


def problems(n: int, seed: int, task: str = "arithmetic") -> tuple[Any, list[dict[str, Any]]]:
    import reasoning_gym

    if task == "word":
        ds = reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed)
        return ds, list(ds)
    ds = reasoning_gym.create_dataset(
        "basic_arithmetic",
        size=n,
        seed=seed,
        min_terms=2,
        max_terms=3,
        min_digits=1,
        max_digits=2,
        operators=("+", "-", "*"),
        allow_negation=False,
    )
    return ds, list(ds)


def batched(settings: Settings, sequences: int, max_tokens: int) -> Settings:
    """``settings`` whose local engine decodes ``sequences`` samples together: the samples
    of every problem in flight share one batch (docs/local.md, "Batching")."""
    return settings.model_copy(
        update={"local_max_sequences": sequences, "local_kv_cells": sequences * (max_tokens + 512)}
    )


def graded(ds: Any, item: dict[str, Any], answers: list[str | None]) -> dict[str, Any]:
    """A problem's row: its question and answer, the answers given and which of them are
    right (reasoning-gym's own ``score_answer``)."""
    right = [a is not None and ds.score_answer(a, item) >= 1.0 for a in answers]
    return {"question": item["question"], "answer": item["answer"], "answers": answers,
            "right": right}  # fmt: skip


def progress(label: str, row: dict[str, Any], t0: float) -> None:
    """One line per finished problem on stderr: ``[label] 7/16 right, 120 s``."""
    right = row["right"]
    print(f"[{label}] {sum(right)}/{len(right)} right, {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)  # fmt: skip


def plurality(answers: list[str | None]) -> str | None:
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def boot(rows: list[float], rng: random.Random, k: int = 2000) -> tuple[float, float]:
    means = sorted(statistics.fmean(rng.choices(rows, k=len(rows))) for _ in range(k))
    return means[int(0.025 * k)], means[int(0.975 * k) - 1]


def plot(table: list[dict[str, Any]], title: str, path: str) -> None:
    """Accuracy (95% interval) against generated tokens per problem, one point per row."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for r in table:  # a legend, not annotations: rows at equal cost would overprint
        lo, hi = r["ci95"]
        ax.errorbar(
            r["tokens_per_problem"], r["accuracy"],
            yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]], fmt="o", capsize=3,
            label=f"{r['technique']} ({r['accuracy']:.2f})",
        )  # fmt: skip
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("generated tokens per problem (log)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="arithmetic")
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=None, help="256 (arithmetic), 384 (word)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default="local:qwen0.5b")
    ap.add_argument("--cache", default=str(HERE / ".cache" / "real_model.sqlite"))
    ap.add_argument("--out", default=None, help="results/real_model[_word].json")
    ap.add_argument("--plot", default=None, help="write accuracy-vs-tokens PNG here")
    ap.add_argument(
        "--concurrent",
        type=int,
        default=3,
        help="problems in flight: their samples share the engine's batch (a problem's "
        "last long samples would otherwise decode nearly alone)",
    )
    args = ap.parse_args()
    if args.max_tokens is None:
        args.max_tokens = 384 if args.task == "word" else 256
    if args.out is None:
        suffix = "_word" if args.task == "word" else ""
        args.out = str(HERE / "results" / f"real_model{suffix}.json")
    return args


async def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    ds, items = problems(args.problems, args.seed, args.task)
    settings = Settings.load(cache_path=Path(args.cache))
    gen_cfg = GenerateConfig(
        n=args.samples, temperature=0.7, max_tokens=args.max_tokens, seed=0, answer_kind="number"
    )
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(args.concurrent)
    finished = 0
    settings = batched(settings, args.samples * args.concurrent, args.max_tokens)

    async def one(model: Model, item: dict[str, Any]) -> dict[str, Any]:
        nonlocal finished
        async with gate:
            pool = await Generate(model, gen_cfg)(Pool(query=item["question"]))
            row = graded(ds, item, [c.answer for c in pool.candidates])
            # generated now or when the cache was filled: the same on a cold and a warm cache
            per_sample = pool.spend.all_completion_tokens / len(row["answers"])
            adaptive = await AdaptiveVote(
                Generate(model, gen_cfg),
                AdaptiveVoteConfig(
                    max_samples=args.samples,
                    min_samples=min(2, args.samples),
                    confidence=0.9,
                    answer_kind="number",
                ),
            )(Pool(query=item["question"]))
        a_right = adaptive.final is not None and ds.score_answer(adaptive.final, item) >= 1.0
        finished += 1
        progress(f"{finished}/{len(items)}", row, t0)
        return {
            **row,
            "tokens_per_sample": per_sample,
            "adaptive_right": a_right,
            "adaptive_samples": len(adaptive.candidates),
        }

    async with Model(args.model, settings=settings) as model:
        per_problem = list(await asyncio.gather(*(one(model, item) for item in items)))
    return per_problem


def main() -> None:
    args = parse_args()
    out_path = Path(args.out)
    per_problem = asyncio.run(collect(args))
    rng = random.Random(0)
    mean_tok = statistics.fmean(p["tokens_per_sample"] for p in per_problem) or 1.0
    rows: dict[str, list[float]] = {
        "one sample": [statistics.fmean(p["right"]) for p in per_problem]
    }
    costs = {"one sample": mean_tok}
    for k in (4, 8, 16):
        if k > args.samples:
            continue
        accs = []
        for p in per_problem:
            groups = [range(g, g + k) for g in range(0, args.samples - k + 1, k)]
            wins = []
            for grp in groups:
                winner = plurality([p["answers"][j] for j in grp])
                wins.append(
                    any(p["right"][j] for j in grp if p["answers"][j] == winner)
                    if winner is not None
                    else False
                )
            accs.append(statistics.fmean(wins))
        rows[f"self-consistency@{k}"] = accs
        costs[f"self-consistency@{k}"] = mean_tok * k
    rows["adaptive vote (max 16, conf 0.9)"] = [float(p["adaptive_right"]) for p in per_problem]
    costs["adaptive vote (max 16, conf 0.9)"] = mean_tok * statistics.fmean(
        p["adaptive_samples"] for p in per_problem
    )
    table = []
    for name, accs in rows.items():
        lo, hi = boot(accs, rng)
        table.append(
            {"technique": name, "accuracy": statistics.fmean(accs), "ci95": [lo, hi],
             "tokens_per_problem": costs[name]}
        )  # fmt: skip
    base = rows["one sample"]
    diffs = {}
    for name, accs in rows.items():
        if name == "one sample":
            continue
        d = [a - b for a, b in zip(accs, base, strict=True)]
        lo, hi = boot(d, rng)
        diffs[name] = {"gain": statistics.fmean(d), "ci95": [lo, hi]}
    out = {
        "model": args.model,
        "task": TASKS[args.task],
        "problems": len(per_problem),
        "samples": args.samples,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "command": " ".join(["python", *sys.argv]),
        "table": table,
        "gain_over_one_sample": diffs,
        "per_problem": per_problem,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    print(f"{args.model} on {out['task']}, {len(per_problem)} problems")
    print(f"{'technique':<34}{'accuracy':>9}{'95% CI':>16}{'tokens':>9}")
    for r in table:
        lo, hi = r["ci95"]
        print(
            f"{r['technique']:<34}{r['accuracy']:>9.3f}   [{lo:.3f}, {hi:.3f}]"
            f"{r['tokens_per_problem']:>9.0f}"
        )
    for name, d in diffs.items():
        lo, hi = d["ci95"]
        print(f"gain of {name} over one sample: {d['gain']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    if args.plot:
        plot(table, f"{args.model}: {out['task']}", args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
