"""Dynamic Cheatsheet on a stream of Game-of-24 puzzles: accuracy over the stream for each
memory variant, on the stand-in oracle and on the embedded SmolLM2 model.

The puzzles are the 1,362 of ``ponder.eval.load_game24`` (Tree of Thoughts' ``24.csv``);
``--start 900`` is ToT's test range. Every answer is graded by the exact checker
``check_24``, never by the model. Each variant runs the same stream in order, with a fresh
store, code execution on (a stored solver is run in the sandbox, as in the paper).

1. Stand-in oracle (``OracleConfig`` Game-of-24 rules): the simulated model alone is right
   with ``--p`` (GPT-4o's ~10% in the paper); each cheatsheet insight and each past example
   in context raise it, and once its cheatsheet holds the curator's solver code, the model
   runs it. The curve shows the loops doing their job (memory persists, curation
   accumulates, code is stored and executed), with the oracle's learning rule stated
   there; it is not evidence about real models.
2. SmolLM2-135M (``local:smollm2``), a few puzzles per variant: real behaviour of a tiny
   model (it does not solve Game of 24; the row shows the loops run end to end on a real
   model and what they cost). Skipped with ``--no-local``.

    python benchmarks/game24_memory.py                     # 100 puzzles, oracle + SmolLM2
    python benchmarks/game24_memory.py --puzzles 300 --no-local
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

from ponder import Model, Settings
from ponder.eval import Game24Puzzle, check_24, extract_expression, load_game24
from ponder.memory import CheatsheetConfig, DynamicCheatsheet, SQLiteStore, Variant
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig

VARIANTS: tuple[Variant, ...] = (
    "none",
    "full_history",
    "retrieval",
    "cumulative",
    "retrieval_synthesis",
)
assert set(VARIANTS) == set(get_args(Variant))


async def stream(
    model: Model, puzzles: list[Game24Puzzle], variant: Variant, workdir: Path, **cfg: Any
) -> dict[str, Any]:
    store = SQLiteStore(workdir / f"{variant}.sqlite")
    dc = DynamicCheatsheet(
        model,
        store,
        CheatsheetConfig(namespace="game24", variant=variant, execute_code=True, **cfg),
    )
    hits: list[bool] = []
    tokens = 0
    ran_code = 0
    t0 = time.perf_counter()
    for p in puzzles:
        r = await dc.answer(p.question)
        hits.append(check_24(extract_expression(r.answer_text), p.numbers))
        tokens += r.usage.total_tokens
        ran_code += r.code_output is not None
    await store.aclose()
    return {
        "variant": variant,
        "accuracy": sum(hits) / len(hits),
        "hits": hits,
        "tokens_per_puzzle": tokens / len(puzzles),
        "code_runs": ran_code,
        "seconds": time.perf_counter() - t0,
    }


def windows(hits: list[bool], n: int) -> str:
    size = max(1, len(hits) // n)
    parts = [hits[i : i + size] for i in range(0, len(hits), size)][:n]
    return " ".join(f"{sum(w) / len(w):.2f}" for w in parts)


def table(title: str, rows: list[dict[str, Any]], n_windows: int) -> None:
    print(title)
    print(f"{'variant':<22}{'accuracy':>9}{'tok/puzzle':>11}{'code runs':>10}   by stream window")
    for r in rows:
        print(
            f"{r['variant']:<22}{r['accuracy']:>9.3f}{r['tokens_per_puzzle']:>11.0f}"
            f"{r['code_runs']:>10}   {windows(r['hits'], n_windows)}"
        )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--puzzles", type=int, default=100)
    ap.add_argument("--start", type=int, default=900, help="first puzzle (900: ToT's test range)")
    ap.add_argument("--p", type=float, default=0.1, help="oracle accuracy with no memory")
    ap.add_argument("--local-puzzles", type=int, default=4)
    ap.add_argument("--no-local", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    puzzles = load_game24(args.start, args.puzzles)
    oracle = OracleConfig(accuracy={"sim": args.p})
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        async with StandinServer(StandinConfig(time_scale=0, oracle=oracle)) as server:
            settings = Settings.load(cache=False)
            async with Model(f"vllm:sim@{server.base_url}", settings=settings) as model:
                out["oracle"] = [await stream(model, puzzles, v, work / "o") for v in VARIANTS]
        if not args.no_local:
            local = load_game24(args.start, args.local_puzzles)
            settings = Settings.load(cache=False)
            async with Model("local:smollm2", settings=settings) as model:
                out["smollm2"] = [
                    await stream(model, local, v, work / "l", max_tokens=160, max_chars=1200)
                    for v in ("none", "cumulative", "retrieval_synthesis")
                ]
    if args.json:
        print(json.dumps(out, indent=2))
        return
    table(
        f"stand-in oracle: {len(puzzles)} puzzles from #{args.start}, p={args.p} without memory "
        "(accuracy, then by fifths of the stream)",
        out["oracle"],
        5,
    )
    if "smollm2" in out:
        print()
        table(
            f"SmolLM2-135M (local:smollm2), {args.local_puzzles} puzzles from #{args.start}",
            out["smollm2"],
            1,
        )
        for r in out["smollm2"]:
            print(f"  {r['variant']}: {r['seconds']:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
