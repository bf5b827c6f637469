"""Dynamic Cheatsheet on Game of 24: memory that the model curates, with a stored solver.

Runs offline against the in-process stand-in server, whose simulated model is right 10% of
the time alone and whose curator writes strategies and, after a few puzzles, solver code
that later answers run in the sandbox. Point ``Model(...)`` at a real endpoint to use it
for real (docs/memory.md).

Run: python examples/memory_game24.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from ponder import Model
from ponder.eval import check_24, extract_expression, load_game24
from ponder.memory import CheatsheetConfig, DynamicCheatsheet, SQLiteStore
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig


async def main() -> None:
    puzzles = load_game24(start=900, count=12)
    oracle = OracleConfig(accuracy={"sim": 0.1})
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "memory.sqlite")
        async with (
            StandinServer(StandinConfig(time_scale=0, oracle=oracle)) as server,
            Model(f"vllm:sim@{server.base_url}") as model,
        ):
            dc = DynamicCheatsheet(
                model, store, CheatsheetConfig(namespace="game24", execute_code=True)
            )
            for p in puzzles:
                r = await dc.answer(p.question)
                expr = extract_expression(r.answer_text)
                mark = "right" if check_24(expr, p.numbers) else "wrong"
                how = "ran the stored solver" if r.code_output is not None else "reasoned"
                print(f"{p.numbers}: {expr!s:<24} {mark:<6} ({how}; cheatsheet v{r.used_version})")
        sheet = await store.latest("game24")
        print(f"\ncheatsheet v{sheet.version if sheet else 0}, first lines:")
        print("\n".join((sheet.content if sheet else "").splitlines()[:5]))


if __name__ == "__main__":
    asyncio.run(main())
