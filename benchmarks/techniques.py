"""Accuracy against generated tokens for each technique, on the stand-in oracle's tasks.

Every technique runs on the same problems against a stand-in server (in-process, no
simulated latency) whose model is right with probability P per sample, wrong answers
drawn from K distractors, with a verifier, ranker and process reward model of known
quality. Prints one row per technique: accuracy, generated tokens per problem, and model
requests per problem; then the adaptive-vote check: samples saved against fixed N=16
voting, and the accuracy lost.

    python benchmarks/techniques.py             # 200 problems per task
    python benchmarks/techniques.py --problems 50 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ponder import Model, Settings, agents
from ponder.testing import StandinConfig, StandinServer
from ponder.testing.oracle import OracleConfig, ProblemBank

P, K = 0.55, 3
DIFFICULTY = {"p55": 0.55, "p70": 0.7, "p80": 0.8}  # models for the adaptive-vote check
ORACLE = OracleConfig(
    accuracy={"m": P, **DIFFICULTY}, distractors=K, verifier_tpr=0.85, verifier_fpr=0.2
)

Technique = Callable[[Model, agents.Pool], Awaitable[agents.Pool]]


def techniques(m: Model) -> dict[str, tuple[str, Technique]]:
    prm = agents.ProcessRewardModel(m)

    async def plain(_m: Model, pool: agents.Pool) -> agents.Pool:
        return await agents.Vote()(await agents.Generate(m, agents.GenerateConfig(n=1))(pool))

    async def vote16(_m: Model, pool: agents.Pool) -> agents.Pool:
        return await agents.Vote()(await agents.Generate(m, agents.GenerateConfig(n=16))(pool))

    async def adaptive(_m: Model, pool: agents.Pool) -> agents.Pool:
        ada = agents.AdaptiveVote(
            agents.Generate(m), agents.AdaptiveVoteConfig(max_samples=16, batch=1)
        )
        return await ada(pool)

    async def best_of_n(_m: Model, pool: agents.Pool) -> agents.Pool:
        pool = await agents.Generate(m, agents.GenerateConfig(n=8))(pool)
        pool = await agents.ModelVerifier(m, agents.VerifierConfig(temperature=0.7))(pool)
        return await agents.BestOfN(agents.BestOfNConfig(score="verifier"))(pool)

    async def archon(_m: Model, pool: agents.Pool) -> agents.Pool:
        # generate -> critique -> rank (keep 4) -> fuse (3) -> verify -> vote by verifier
        pool = await agents.Generate(m, agents.GenerateConfig(n=8))(pool)
        pool = await agents.Critic(m)(pool)
        pool = await agents.Ranker(m, agents.RankerConfig(top_k=4))(pool)
        pool = await agents.Fuser(m, agents.FuserConfig(n=3))(pool)
        pool = await agents.ModelVerifier(m, agents.VerifierConfig(temperature=0.7))(pool)
        return await agents.BestOfN(agents.BestOfNConfig(score="verifier"))(pool)

    async def beam(_m: Model, pool: agents.Pool) -> agents.Pool:
        return await agents.BeamSearch(m, prm, agents.BeamSearchConfig(beam_width=2, expansions=2))(
            pool
        )

    async def mcts(_m: Model, pool: agents.Pool) -> agents.Pool:
        return await agents.MCTS(m, prm, agents.MCTSConfig(iterations=8, expansions=2))(pool)

    async def particles(_m: Model, pool: agents.Pool) -> agents.Pool:
        return await agents.ParticleFilter(m, prm, agents.ParticleFilterConfig(particles=4))(pool)

    return {
        "plain sample": ("arithmetic", plain),
        "vote N=16": ("arithmetic", vote16),
        "adaptive vote (max 16)": ("arithmetic", adaptive),
        "best-of-8, verifier": ("arithmetic", best_of_n),
        "archon stack": ("arithmetic", archon),
        "plain sample (multistep)": ("multistep", plain),
        "beam search (PRM)": ("multistep", beam),
        "MCTS (PRM)": ("multistep", mcts),
        "particle filter (PRM)": ("multistep", particles),
    }


async def _score(
    m: Model, bank: ProblemBank, kind: str, technique: Technique, problems: int
) -> dict[str, Any]:
    right = tokens = requests = samples = 0
    t0 = time.perf_counter()
    for pid in bank.ids(kind, problems):
        p = bank.problem(pid)
        pool = await technique(m, agents.Pool(query=p.question))
        right += p.is_correct(pool.final)
        tokens += pool.spend.completion_tokens
        requests += pool.spend.requests
        samples += len(pool.candidates)
    return {
        "task": kind,
        "accuracy": right / problems,
        "generated_tokens": tokens / problems,
        "requests": requests / problems,
        "candidates": samples / problems,
        "seconds": time.perf_counter() - t0,
    }


def _fresh(base_url: str, model: str) -> Model:
    """A model with an empty cache, so every technique pays for its own samples."""
    cache = Path(tempfile.mkdtemp()) / "cache.sqlite"
    return Model(f"vllm:{model}@{base_url}", settings=Settings.load(cache_path=cache))


async def run(problems: int) -> dict[str, Any]:
    bank = ProblemBank(ORACLE.bank_seed, K)
    rows: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    async with StandinServer(StandinConfig(time_scale=0, oracle=ORACLE)) as server:
        names = list(techniques(_fresh(server.base_url, "m")))
        for name in names:
            async with _fresh(server.base_url, "m") as m:
                kind, technique = techniques(m)[name]
                rows[name] = await _score(m, bank, kind, technique, problems)
        for label, p in DIFFICULTY.items():
            async with _fresh(server.base_url, label) as m:
                fixed = await _score(m, bank, "arithmetic", techniques(m)["vote N=16"][1], problems)
            for confidence in (0.9, 0.95):
                async with _fresh(server.base_url, label) as m:

                    async def ada(
                        m: Model, pool: agents.Pool, c: float = confidence
                    ) -> agents.Pool:
                        cfg = agents.AdaptiveVoteConfig(max_samples=16, confidence=c)
                        return await agents.AdaptiveVote(agents.Generate(m), cfg)(pool)

                    got = await _score(m, bank, "arithmetic", ada, problems)
                checks[f"p={p} confidence={confidence}"] = {
                    "fixed16_accuracy": fixed["accuracy"],
                    "adaptive_accuracy": got["accuracy"],
                    "samples_saved": 1 - got["candidates"] / fixed["candidates"],
                    "accuracy_loss_points": 100 * (fixed["accuracy"] - got["accuracy"]),
                }
    rows["_adaptive_check"] = checks
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = asyncio.run(run(args.problems))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"stand-in oracle: p={P} per sample, {K} distractors, {args.problems} problems per task")
    print(f"{'technique':<26}{'task':<12}{'accuracy':>9}{'gen tok':>9}{'requests':>9}")
    for name, r in rows.items():
        if name.startswith("_"):
            continue
        print(
            f"{name:<26}{r['task']:<12}{r['accuracy']:>9.3f}{r['generated_tokens']:>9.0f}"
            f"{r['requests']:>9.1f}"
        )
    print("adaptive vote (max 16) vs fixed N=16 voting (target: >= 50% saved, <= 1 point lost)")
    for label, c in rows["_adaptive_check"].items():
        print(
            f"  {label:<26} saved {c['samples_saved']:>4.0%}   accuracy "
            f"{c['adaptive_accuracy']:.3f} vs {c['fixed16_accuracy']:.3f} "
            f"({c['accuracy_loss_points']:+.1f} points)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
