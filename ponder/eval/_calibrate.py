"""Calibrating a cascade's threshold on a labelled set.

Run the cheap stage alone over labelled items (``ponder eval cheap_vote.yaml DATA``), then
``ponder eval-report cheap.jsonl --calibrate-cascade 0.95``: for each possible agreement
threshold, how many questions the cheap stage would keep and how often its answer is
right on those. The lowest threshold whose kept answers reach the target accuracy
escalates the fewest questions; set it as the cascade's ``threshold``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from ponder.eval._harness import wilson

__all__ = ["Calibration", "CalibrationPoint", "calibrate_cascade"]


class CalibrationPoint(BaseModel):
    """Keeping the cheap answer when agreement >= ``threshold``."""

    model_config = ConfigDict(frozen=True)

    threshold: float
    kept: int
    kept_share: float
    kept_accuracy: float
    kept_ci95: tuple[float, float]


class Calibration(BaseModel):
    model_config = ConfigDict(frozen=True)

    target: float
    items: int
    points: tuple[CalibrationPoint, ...]
    threshold: float | None
    """The lowest threshold whose kept answers reach ``target`` (None: none does)."""


def _agreement(candidates: Sequence[dict[str, Any]]) -> tuple[float, bool]:
    """The top answer's share among answered candidates, and whether it is right."""
    from ponder.agents import normalize_answer

    keyed = [
        (normalize_answer(c.get("answer")), bool(c.get("correct")))
        for c in candidates
        if c.get("answer") is not None
    ]
    if not keyed:
        return 0.0, False
    counts = Counter(k for k, _ in keyed)
    best = max(counts.values())
    top = next(k for k, _ in keyed if counts[k] == best)  # first to reach it, as in vote()
    return best / len(keyed), any(ok for k, ok in keyed if k == top)


def calibrate_cascade(rows: Sequence[dict[str, Any]], target: float) -> Calibration:
    """Thresholds for the ``agreement`` signal from eval rows of the cheap stage alone
    (each row's ``candidates`` are its samples with their correctness)."""
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be in (0, 1], got {target}")
    scored = [_agreement(r.get("candidates") or []) for r in rows]
    points = []
    chosen = None
    for t in sorted({a for a, _ in scored if a > 0}):
        kept = [ok for a, ok in scored if a >= t]
        acc = sum(kept) / len(kept)
        points.append(
            CalibrationPoint(
                threshold=t,
                kept=len(kept),
                kept_share=len(kept) / len(scored),
                kept_accuracy=acc,
                kept_ci95=wilson(sum(kept), len(kept)),
            )
        )
        if chosen is None and acc >= target:
            chosen = t
    return Calibration(target=target, items=len(scored), points=tuple(points), threshold=chosen)
