"""Voting: plurality, weighted by scores, and the stopping rule of adaptive voting."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ponder.agents._answers import AnswerKind, normalize_answer
from ponder.agents._state import Candidate, VoteResult

__all__ = ["VoteResult", "leader_settled_probability", "vote", "vote_values"]


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


def _field_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def vote_values(
    values: Sequence[Mapping[str, Any] | BaseModel | None],
    *,
    key: str | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any] | None, dict[str, dict[str, float]]]:
    """A vote over typed answers. With ``key``, the plurality of that field (dotted for a
    nested one: ``"result.unit"``) picks the winning object (the first that has it);
    without, each field is voted on its own and the answer is made of the winners. Returns
    the answer and each voted field's tally (values as JSON). None values abstain."""
    rows: list[dict[str, Any]] = []
    for v in values:
        if v is None:
            continue
        rows.append(v.model_dump(mode="json") if isinstance(v, BaseModel) else dict(v))
    if not rows:
        return None, {}

    def get(row: dict[str, Any], path: str) -> Any:
        cur: Any = row
        for part in path.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return _MISSING
            cur = cur[part]
        return cur

    def plurality(field: str) -> tuple[Any, dict[str, float]]:
        tally: dict[str, float] = {}
        first: dict[str, Any] = {}
        for row in rows:
            value = get(row, field)
            if value is _MISSING:
                continue
            k = _field_key(value)
            tally[k] = tally.get(k, 0.0) + 1
            first.setdefault(k, value)
        if not tally:
            return _MISSING, {}
        top = max(tally.values())
        leaders = sorted(k for k, c in tally.items() if c == top)
        win = leaders[0] if len(leaders) == 1 else random.Random(seed).choice(leaders)
        return first[win], dict(sorted(tally.items(), key=lambda kv: -kv[1]))

    if key is not None:
        winner, tally = plurality(key)
        if winner is _MISSING:
            return None, {}
        chosen = next(r for r in rows if _field_key(get(r, key)) == _field_key(winner))
        return chosen, {key: tally}
    fields = list(dict.fromkeys(f for r in rows for f in r))
    out: dict[str, Any] = {}
    tallies: dict[str, dict[str, float]] = {}
    for f in fields:
        winner, tally = plurality(f)
        if winner is not _MISSING:
            out[f], tallies[f] = winner, tally
    return out, tallies


_MISSING = object()
