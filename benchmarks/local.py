"""The embedded engine against the limit: tokens/s through Ponder vs raw batched llama.cpp.

For each model and each ``n`` it measures, in one run:

* **raw batched**: llama-cpp-python's low-level API, no Ponder: the prompt evaluated once,
  its KV copied to ``n`` sequences, all ``n`` decoded one token each per ``llama_decode``
  with their own seeded samplers (the same chain and seeds Ponder uses). This is the limit
  on this machine.
* **ponder**: ``Model("local:...").generate(prompt, n=n)`` on the batching engine.
* **one at a time**: the same request on an engine limited to one sequence
  (``PONDER_LOCAL_MAX_SEQUENCES=1``) and on the base (AVX2) kernels, which decodes the
  samples one after another as the engine did before batching ("today" in issue 28).

Each measurement runs in a process of its own, ``--trials`` times, best kept; the three
ways of one ``n`` run one after another, so that drift in the machine's speed over minutes
hits all three alike. Raw and Ponder run the CPU kernels Ponder picks for this machine
(``--cpu-variant``, docs/local.md "The build"); each part prints the kernels it ran.

Then 8 concurrent requests with different prompts (``n=1`` each): awaited one after
another, all at once through Ponder (continuous batching), and raw batched.

    python benchmarks/local.py                       # SmolLM2, and Qwen 0.5B if installed
    python benchmarks/local.py --models smollm2 --ns 1,8 --tokens 32 --trials 1   # smoke
    python benchmarks/local.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ponder import Model, Settings
from ponder.backends._fixtures import fixture_path
from ponder.backends._llama_batch import Sampling
from ponder.backends._llama_cpu import in_use
from ponder.backends._local import LocalConfig, LocalWire, resolve_model_path
from ponder.types import Message

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."
TOPICS = ["a lighthouse keeper", "a chess robot", "a lost cat", "a volcano", "a violinist",
          "a submarine", "a desert town", "a library ghost"]  # fmt: skip
TEMPERATURE = 0.8


def _sampling(tokens: int) -> Sampling:
    return Sampling(temperature=TEMPERATURE, top_k=40, top_p=0.95, min_p=0.05,
                    repeat_penalty=1.0, max_tokens=tokens)  # fmt: skip


class Raw:
    """Batched decoding with llama-cpp-python's C API only: the limit Ponder is held to."""

    def __init__(self, path: Path, n_ctx: int, max_seqs: int, threads: int) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaContext, LlamaModel

        self.llama = llama_cpp
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        self.model = LlamaModel(path_model=str(path), params=params, verbose=False)
        p = llama_cpp.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch = n_ctx * 4, 512, 512
        p.n_seq_max, p.kv_unified = max_seqs, True
        p.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        p.n_threads = p.n_threads_batch = threads
        self.ctx = LlamaContext(model=self.model, params=p, verbose=False)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        vocab = self.model.vocab
        self.eog = {
            t for t in range(self.model.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)
        }

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i] = tok, pos, 1
            b.seq_id[i][0], b.logits[i] = seq, logits
        assert self.llama.llama_decode(self.ctx.ctx, b) == 0

    def run(self, prompts: list[list[int]], seeds: list[int], tokens: int) -> int:
        """Prefill each distinct prompt once, copy it to its sequences, then decode every
        sequence to EOS or ``tokens``; returns the tokens generated."""
        ll, ctx = self.llama, self.ctx
        ll.llama_memory_clear(ctx.memory, False)
        s = _sampling(tokens)
        samplers = []
        for seed in seeds:
            chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
            for smp in (
                ll.llama_sampler_init_top_k(s.top_k),
                ll.llama_sampler_init_top_p(s.top_p, 1),
                ll.llama_sampler_init_min_p(s.min_p, 1),
                ll.llama_sampler_init_temp(s.temperature),
                ll.llama_sampler_init_dist(seed),
            ):
                ll.llama_sampler_chain_add(chain, smp)
            samplers.append(chain)
        active: list[list[int]] = []  # [seq, pos, last token, count]
        if len(prompts) == 1:  # n samples of one prompt: evaluated once, copied
            toks = prompts[0]
            self._decode([(t, i, 0, i == len(toks) - 1) for i, t in enumerate(toks)])
            for q in range(1, len(seeds)):
                ll.llama_memory_seq_cp(ctx.memory, 0, q, -1, -1)
            for q in range(len(seeds)):
                tok = ll.llama_sampler_sample(samplers[q], ctx.ctx, len(toks) - 1)
                active.append([q, len(toks), tok, 1])
        else:  # one prompt per sequence
            for q, toks in enumerate(prompts):
                self._decode([(t, i, q, i == len(toks) - 1) for i, t in enumerate(toks)])
                tok = ll.llama_sampler_sample(samplers[q], ctx.ctx, len(toks) - 1)
                active.append([q, len(toks), tok, 1])
        generated = len(active)
        active = [a for a in active if a[2] not in self.eog]
        while active:
            self._decode([(a[2], a[1], a[0], True) for a in active])
            nxt = []
            for i, a in enumerate(active):
                tok = ll.llama_sampler_sample(samplers[a[0]], ctx.ctx, i)
                if tok in self.eog:
                    continue
                generated += 1
                a[1], a[2], a[3] = a[1] + 1, tok, a[3] + 1
                if a[3] < tokens:
                    nxt.append(a)
            active = nxt
        for chain in samplers:
            ll.llama_sampler_free(chain)
        return generated


def _best(trials: int, fn: Any) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(trials):
        t = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - t)
    return best, count


async def _abest(trials: int, fn: Any) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(trials):
        t = time.perf_counter()
        count = await fn()
        best = min(best, time.perf_counter() - t)
    return best, count


async def _prompts(name: str, threads: int) -> tuple[list[int], list[list[int]]]:
    """The chat-templated prompts, exactly as Ponder builds them (the model only: no
    llama.cpp context, no threads)."""
    engine = LocalWire(LocalConfig(n_threads=threads)).engine(name)
    await engine.load()
    tokens: list[int] = engine._batch.call(
        lambda m: engine.prompt_tokens(m, [Message.user(PROMPT)], None)
    )
    many = [
        engine._batch.call(lambda m, t=t: engine.prompt_tokens(m, [Message.user(_story(t))], None))
        for t in TOPICS
    ]
    return tokens, many


def _story(topic: str) -> str:
    return f"Write a long story about {topic}."


async def part_raw(
    name: str, ns: list[int], tokens: int, trials: int, threads: int, max_seqs: int,
    concurrent: bool,
) -> dict[str, Any]:  # fmt: skip
    prompt, prompts = await _prompts(name, threads)
    raw = Raw(resolve_model_path(name), 4096, max_seqs, threads)
    out: dict[str, Any] = {}
    for n in ns:
        t, k = _best(trials, lambda n=n: raw.run([prompt], list(range(n)), tokens))
        out[f"n{n}"] = (k, t)
    if concurrent:
        t, k = _best(trials, lambda: raw.run(prompts, list(range(len(TOPICS))), tokens))
        out["concurrent"] = (k, t)
    return out


async def part_ponder(
    name: str, ns: list[int], tokens: int, trials: int, threads: int, max_seqs: int,
    concurrent: bool,
) -> dict[str, Any]:  # fmt: skip
    settings = Settings.load(cache=False, local_threads=threads, local_max_sequences=max_seqs)
    out: dict[str, Any] = {}
    async with Model(f"local:{name}", settings=settings, cache=False) as m:
        await m.generate("warm up", max_tokens=2)
        for n in ns:

            async def samples(n: int = n) -> int:
                c = await m.generate(
                    PROMPT, n=n, seed=0, temperature=TEMPERATURE, max_tokens=tokens
                )
                return c.usage.completion_tokens

            t, k = await _abest(trials, samples)
            out[f"n{n}"] = (k, t)
        if concurrent:

            async def one(i: int) -> int:
                c = await m.generate(_story(TOPICS[i]), seed=i, temperature=TEMPERATURE,
                                     max_tokens=tokens)  # fmt: skip
                return c.usage.completion_tokens

            async def sequential() -> int:
                return sum([await one(i) for i in range(len(TOPICS))])

            async def concurrent() -> int:
                return sum(await asyncio.gather(*(one(i) for i in range(len(TOPICS)))))

            t, k = await _abest(trials, sequential)
            out["sequential"] = (k, t)
            t, k = await _abest(trials, concurrent)
            out["concurrent"] = (k, t)
    return out


def _run_part(
    part: str, model: str, args: argparse.Namespace, ns: list[int], concurrent: bool
) -> dict[str, Any]:
    """One measurement in a fresh process: one llama.cpp context at a time (OpenMP
    threads of an idle context spin for a while and would slow the next)."""
    variant = args.today_variant if part == "single" else args.cpu_variant
    env = {**os.environ, "PONDER_LOCAL_CPU_VARIANT": variant}
    max_seqs = 1 if part == "single" else max([*_ns(args), len(TOPICS)])
    done = subprocess.run(
        [sys.executable, __file__, "--part", part, "--models", model,
         "--ns", ",".join(map(str, ns)), "--tokens", str(args.tokens), "--trials", "1",
         "--threads", str(args.threads), "--max-seqs", str(max_seqs)]
        + (["--concurrent"] if concurrent else []),
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"benchmarks/local.py --part {part} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _ns(args: argparse.Namespace) -> list[int]:
    return [int(x) for x in args.ns.split(",") if x]


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Each measurement ``--trials`` times, best kept; the three ways of one ``n`` run one
    after another, so that drift in the machine's speed over minutes hits all three."""
    best: dict[str, dict[str, tuple[int, float]]] = {"raw": {}, "ponder": {}, "single": {}}
    kernels: dict[str, str] = {}

    def keep(part: str, result: dict[str, Any]) -> None:
        kernels[part] = result.pop("kernels")
        for key, (k, t) in result.items():
            if key not in best[part] or t < best[part][key][1]:
                best[part][key] = (k, t)

    for _ in range(args.trials):
        for n in _ns(args):
            for part in ("raw", "ponder", "single"):
                keep(part, _run_part(part, name, args, [n], concurrent=False))
        for part in ("raw", "ponder"):
            keep(part, _run_part(part, name, args, [], concurrent=True))
    raw, ponder, single = best["raw"], best["ponder"], best["single"]
    rows = []
    for n in _ns(args):
        key = f"n{n}"
        (kr, tr), (kp, tp), (ks, ts) = raw[key], ponder[key], single[key]
        rows.append({"n": n, "raw_tps": kr / tr, "ponder_tps": kp / tp,
                     "one_at_a_time_tps": ks / ts, "tokens": [kr, kp, ks]})  # fmt: skip
    (kr, tr), (kq, tq), (kc, tc) = raw["concurrent"], ponder["sequential"], ponder["concurrent"]
    return {
        "model": name,
        "kernels": {
            "raw": kernels["raw"],
            "ponder": kernels["ponder"],
            "one_at_a_time": kernels.get("single", ""),
        },
        "n": rows,
        "concurrent8": {
            "raw_tps": kr / tr,
            "sequential_tps": kq / tq,
            "concurrent_tps": kc / tc,
            "tokens": [kr, kq, kc],
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="", help="comma-separated; default smollm2 (+ qwen0.5b)")
    ap.add_argument("--ns", default="1,4,8,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-variant", default="auto", help="llama.cpp CPU kernels of raw and ponder")
    ap.add_argument("--today-variant", default="base", help="kernels of the one-at-a-time engine")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--part", choices=["raw", "ponder", "single"], help=argparse.SUPPRESS)
    ap.add_argument("--max-seqs", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--concurrent", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part is not None:  # one measurement, in this process (see _run_part)
        part = part_raw if args.part == "raw" else part_ponder
        coro = part(args.models, _ns(args), args.tokens, args.trials, args.threads,
                    args.max_seqs, args.concurrent)  # fmt: skip
        result = asyncio.run(coro)
        result["kernels"] = in_use()
        print(json.dumps(result))
        return 0
    models = [m for m in args.models.split(",") if m] or (
        ["smollm2"] + (["qwen0.5b"] if fixture_path("qwen0.5b").is_file() else [])
    )
    out = [bench_model(m, args) for m in models]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out:
        k = r["kernels"]
        print(f"\n{r['model']}, {args.threads} threads, {args.tokens} tokens per sample "
              f"(tokens/s); CPU kernels: raw {k['raw']}, ponder {k['ponder']}, one at a time "
              f"{k['one_at_a_time']}")  # fmt: skip
        print(f"{'n':>4} {'raw batched':>12} {'ponder':>8} {'x raw':>6} {'one at a time':>14} "
              f"{'batched / one':>14}")  # fmt: skip
        for row in r["n"]:
            print(f"{row['n']:>4} {row['raw_tps']:>12.1f} {row['ponder_tps']:>8.1f} "
                  f"{row['ponder_tps'] / row['raw_tps']:>5.2f}x {row['one_at_a_time_tps']:>14.1f} "
                  f"{row['ponder_tps'] / row['one_at_a_time_tps']:>13.2f}x")  # fmt: skip
        c = r["concurrent8"]
        print(f"8 different prompts: raw batched {c['raw_tps']:.1f}   ponder concurrent "
              f"{c['concurrent_tps']:.1f} ({c['concurrent_tps'] / c['raw_tps']:.2f}x raw)   "
              f"one after another {c['sequential_tps']:.1f}   concurrent / sequential "
              f"{c['concurrent_tps'] / c['sequential_tps']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
