"""Voting: plurality, weighted by scores, and the stopping rule of adaptive voting."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ponder.agents._answers import AnswerKind, normalize_answer
from ponder.agents._state import Candidate, VoteResult

__all__ = ["VoteResult", "leader_settled_probability", "vote"]


def vote(
    candidates: Sequence[Candidate],
    *,
    kind: AnswerKind = "auto",
    weight: str | None = None,
    seed: int = 0,
) -> VoteResult:
    """Plurality vote over normalised answers; ``weight`` names a score to weight by.

    Ties are broken with ``random.Random(seed)``, so a vote is deterministic. With
    ``weight="verifier"`` a candidate counts as much as its verifier score (0 for a
    rejected one); candidates missing that score count 0.
    """
    tally: dict[str, float] = {}
    first: dict[str, str] = {}
    abstained = 0
    for c in candidates:
        key = normalize_answer(c.answer, kind)
        w = 1.0 if weight is None else c.scores.get(weight, 0.0)
        if key is None or w <= 0:
            abstained += 1
            continue
        tally[key] = tally.get(key, 0.0) + w
        first.setdefault(key, c.answer or key)
    if not tally:
        return VoteResult(
            answer=None, key=None, tally={}, support=0.0, counted=0, abstained=abstained
        )
    top = max(tally.values())
    leaders = sorted(k for k, v in tally.items() if math.isclose(v, top))
    key = leaders[0] if len(leaders) == 1 else random.Random(seed).choice(leaders)
    total = sum(tally.values())
    return VoteResult(
        answer=first[key],
        key=key,
        tally=dict(sorted(tally.items(), key=lambda kv: -kv[1])),
        support=tally[key] / total,
        counted=len(candidates) - abstained,
        abstained=abstained,
    )


def leader_settled_probability(leader: int, runner_up: int) -> float:
    """P(the leading answer is more likely than the runner-up | the counts so far).

    Adaptive-Consistency's Beta stopping rule (Aggarwal et al., 2023): with a uniform
    prior, the leader's share among the two is Beta(leader+1, runner_up+1), and
    P(Beta(a, b) > 1/2) = P(Binomial(a+b-1, 1/2) <= a-1), computed exactly.
    """
    a, b = leader + 1, runner_up + 1
    n = a + b - 1
    return float(sum(math.comb(n, k) for k in range(a)) / 2**n)
