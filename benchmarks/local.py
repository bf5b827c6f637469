"""Local backend benchmark: Ponder's ``local:`` backend vs llama-cpp-python called directly.

1. Decode speed: tokens per second of ``Model("local:smollm2").generate`` against
   ``Llama.create_chat_completion`` on the same prompt, greedy, same length; the ratio is
   Ponder's overhead (target <= 1.05x the time).
2. Prefill with prefix reuse: ``n=8`` samples of one long prompt (evaluated once) against
   the same prompt evaluated 8 times from scratch.

    python benchmarks/local.py          # best of 3
    python benchmarks/local.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from ponder import Model, Settings
from ponder.backends._local import LocalEngine, LocalWire

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."
LONG = "Here are the rules of the game, read them carefully. " * 40 + "Summarise the rules."


def _engine() -> LocalEngine:
    return LocalWire().engine("smollm2")


async def decode(model: Model, tokens: int, trials: int) -> dict[str, Any]:
    await model.generate("warm up", max_tokens=2)
    engine = _engine()
    llm: Any = engine._llm
    best_direct = best_ponder = float("inf")
    n_direct = n_ponder = 0
    for _ in range(trials):
        llm.reset()
        t = time.perf_counter()
        ref = llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=tokens
        )
        best_direct = min(best_direct, time.perf_counter() - t)
        n_direct = ref["usage"]["completion_tokens"]

        llm.reset()
        t = time.perf_counter()
        c = await model.generate(PROMPT, temperature=0, max_tokens=tokens)
        best_ponder = min(best_ponder, time.perf_counter() - t)
        n_ponder = c.usage.completion_tokens
    return {
        "tokens_direct": n_direct,
        "tokens_ponder": n_ponder,
        "tok_per_s_direct": n_direct / best_direct,
        "tok_per_s_ponder": n_ponder / best_ponder,
        "time_ratio": (best_ponder / n_ponder) / (best_direct / n_direct),
    }


async def prefill(model: Model, trials: int) -> dict[str, Any]:
    engine = _engine()
    llm: Any = engine._llm
    best_shared = best_independent = float("inf")
    prompt_tokens = 0
    evaluated = 0
    for _ in range(trials):
        llm.reset()
        before = engine.stats.prompt_tokens_evaluated
        t = time.perf_counter()
        c = await model.generate(LONG, n=8, max_tokens=1, seed=0)
        best_shared = min(best_shared, time.perf_counter() - t)
        evaluated = engine.stats.prompt_tokens_evaluated - before
        prompt_tokens = c.usage.prompt_tokens

        tokens = llm.tokenize(
            engine._render([{"role": "user", "content": LONG}]).encode(),  # type: ignore[misc]
            add_bos=False,
            special=True,
        )
        t = time.perf_counter()
        for _ in range(8):
            llm.reset()
            llm.eval(tokens)
        best_independent = min(best_independent, time.perf_counter() - t)
    return {
        "prompt_tokens": prompt_tokens,
        "tokens_evaluated_shared": evaluated,
        "tokens_evaluated_independent": 8 * prompt_tokens,
        "seconds_shared": best_shared,
        "seconds_independent": best_independent,
        "speedup": best_independent / best_shared,
    }


async def main_async(trials: int, tokens: int) -> dict[str, Any]:
    settings = Settings.load(cache=False)
    async with Model("local:smollm2", settings=settings, cache=False) as model:
        return {
            "decode": await decode(model, tokens, trials),
            "prefill_n8": await prefill(model, trials),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = asyncio.run(main_async(args.trials, args.tokens))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    d, p = out["decode"], out["prefill_n8"]
    print(
        f"decode  llama-cpp-python {d['tok_per_s_direct']:.1f} tok/s   "
        f"ponder {d['tok_per_s_ponder']:.1f} tok/s   "
        f"time per token ponder/direct {d['time_ratio']:.3f}x   "
        f"({d['tokens_ponder']} vs {d['tokens_direct']} tokens)"
    )
    print(
        f"prefill n=8 of a {p['prompt_tokens']}-token prompt: shared {p['seconds_shared']:.3f}s "
        f"({p['tokens_evaluated_shared']} tokens evaluated)   8 independent "
        f"{p['seconds_independent']:.3f}s ({p['tokens_evaluated_independent']} tokens)   "
        f"speedup {p['speedup']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
