"""The oracle's bank of problems: a pure function of ``(seed, id)``, each with its
question and its true answer, and the configuration of the simulated models
(:mod:`ponder.testing.oracle` has the protocol)."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.testing._solve24 import solve24

__all__ = [
    "Kind",
    "OracleConfig",
    "Problem",
    "ProblemBank",
    "normalize",
    "rng_for",
    "solve24_expression",
]

Kind = Literal["arithmetic", "multistep", "game24", "code"]


class OracleConfig(BaseModel):
    """How good the simulated models are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bank_seed: int = 0
    accuracy: dict[str, float] = Field(
        default_factory=lambda: {"strong": 0.8, "weak": 0.4},
        description="Probability that a generator of this model name is right.",
    )
    default_accuracy: float = Field(0.6, ge=0, le=1)
    distractors: int = Field(3, ge=1, le=20, description="Distinct wrong answers per problem.")
    verifier_tpr: float = Field(0.9, ge=0, le=1)
    verifier_fpr: float = Field(0.2, ge=0, le=1)
    ranker_accuracy: float = Field(0.8, ge=0, le=1, description="P(a right one ranked first).")
    fuser_boost: float = Field(0.15, ge=0, le=1, description="Accuracy gain of a fuser.")
    step_noise: float = Field(0.15, ge=0, le=1, description="Noise of process rewards.")
    insight_gain: float = Field(
        0.1, ge=0, le=1, description="Game of 24: accuracy gain per cheatsheet insight."
    )
    insight_cap: float = Field(0.4, ge=0, le=1, description="Cap of the insight gain.")
    example_gain: float = Field(
        0.02, ge=0, le=1, description="Game of 24: accuracy gain per past example in context."
    )
    example_cap: float = Field(0.2, ge=0, le=1, description="Cap of the example gain.")
    curator_insight_rate: float = Field(
        0.5, ge=0, le=1, description="P(a curation adds a new insight)."
    )
    solver_after: int = Field(
        3, ge=0, description="Insights a cheatsheet holds before the curator may add code."
    )
    solver_rate: float = Field(0.3, ge=0, le=1, description="P(a curation then adds a solver).")
    difficulty_spread: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Per-problem difficulty: a generator's accuracy on problem i is "
        "accuracy + spread * u_i, u_i uniform in [-1, 1] (seeded by the problem), clipped.",
    )

    def p_for(self, model: str, pid: int) -> float:
        """Accuracy of ``model`` on problem ``pid`` (with the difficulty spread)."""
        p = self.p_correct(model)
        if self.difficulty_spread:
            u = rng_for("difficulty", self.bank_seed, pid).uniform(-1.0, 1.0)
            p = min(1.0, max(0.0, p + self.difficulty_spread * u))
        return p

    def p_correct(self, model: str) -> float:
        return self.accuracy.get(model, self.default_accuracy)


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem with its true answer; ``steps`` are checkable intermediate results."""

    id: int
    kind: Kind
    question: str
    answer: str
    distractors: tuple[str, ...]
    steps: tuple[str, ...] = ()
    tests: tuple[str, ...] = field(default=())

    def is_correct(self, answer: str | None) -> bool:
        return answer is not None and normalize(answer) == normalize(self.answer)


def normalize(answer: str) -> str:
    return re.sub(r"\s+", "", answer).rstrip(".").lower()


def rng_for(*parts: object) -> random.Random:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(h, "big"))


def _distractors(rng: random.Random, answer: int, k: int) -> tuple[str, ...]:
    out: list[str] = []
    while len(out) < k:
        d = answer + rng.choice([-1, 1]) * rng.randint(1, max(3, abs(answer) // 5 + 2))
        if d != answer and str(d) not in out:
            out.append(str(d))
    return tuple(out)


@lru_cache(maxsize=8192)
def solve24_expression(nums: tuple[int, ...]) -> str | None:
    """One expression over ``nums`` that makes 24, or None (memoised per multiset)."""
    return solve24(nums)


class ProblemBank:
    """Problems as a pure function of ``(seed, id)``; ``kinds`` cycle with the id."""

    KINDS: tuple[Kind, ...] = ("arithmetic", "multistep", "game24", "code")

    def __init__(self, seed: int = 0, distractors: int = 3) -> None:
        self.seed = seed
        self.k = distractors
        self._memo: dict[int, Problem] = {}

    def ids(self, kind: Kind, count: int, start: int = 0) -> list[int]:
        """The first ``count`` problem ids of ``kind`` from ``start`` on."""
        k = self.KINDS.index(kind)
        first = start + (k - start) % len(self.KINDS)
        return list(range(first, first + count * len(self.KINDS), len(self.KINDS)))

    def problem(self, pid: int) -> Problem:
        """Problem ``pid``; its kind is ``KINDS[pid % 4]`` (memoised, it is pure)."""
        if pid < 0:
            raise ValueError(f"problem ids are >= 0, got {pid}")
        hit = self._memo.get(pid)
        if hit is not None:
            return hit
        if len(self._memo) >= 65536:
            self._memo.clear()
        made = self._make(pid)
        self._memo[pid] = made
        return made

    def _make(self, pid: int) -> Problem:
        kind = self.KINDS[pid % len(self.KINDS)]
        rng = rng_for("problem", self.seed, pid, kind)
        tag = f"Problem {pid}:"

        def numeric(question: str, answer: int, steps: tuple[str, ...] = ()) -> Problem:
            # a number answer, with near misses as the distractors
            return Problem(
                pid,
                kind,
                f"{tag} {question}",
                str(answer),
                _distractors(rng, answer, self.k),
                steps,
            )

        if kind == "arithmetic":
            a, b, c = rng.randint(2, 99), rng.randint(2, 30), rng.randint(1, 99)
            return numeric(f"What is {a} * {b} + {c}?", a * b + c)
        if kind == "multistep":
            value = rng.randint(2, 20)
            text = [f"Start with {value}."]
            steps = []
            for _ in range(rng.randint(3, 5)):
                op, x = rng.choice(["add", "multiply by", "subtract"]), rng.randint(2, 9)
                new = value + x if op == "add" else value * x if op == "multiply by" else value - x
                text.append(f"Then {op} {x}.")
                steps.append(
                    f"{value} {'+' if op == 'add' else '*' if op[0] == 'm' else '-'} {x} = {new}"
                )
                value = new
            return numeric(f"{' '.join(text)} What is the result?", value, tuple(steps))
        if kind == "game24":
            while True:
                nums = [rng.randint(1, 13) for _ in range(4)]
                sol = solve24_expression(tuple(sorted(nums)))
                if sol:
                    break
            wrong: list[str] = []
            templates = (
                "{a}*{b}+{c}-{d}",
                "({a}+{b})*{c}-{d}",
                "{a}*{b}-{c}*{d}",
                "{a}+{b}+{c}+{d}",
            )
            for attempt in range(200):
                a, b, c, d = rng.sample(nums, 4)
                w = templates[attempt % len(templates)].format(a=a, b=b, c=c, d=d)
                if w not in wrong and w != sol:
                    wrong.append(w)
                if len(wrong) == self.k:
                    break
            while len(wrong) < self.k:  # tiny number sets: fewer distinct expressions
                wrong.append(f"{nums[0]}*{nums[1]}+{len(wrong)}")
            return Problem(
                pid,
                kind,
                f"{tag} Use the numbers {' '.join(map(str, nums))} once each with + - * / "
                "to make 24.",
                sol,
                tuple(wrong),
            )
        m = rng.randint(2, 9)
        q = rng.randint(1, 20)
        tests = tuple(f"assert f({x}) == {m * x + q}" for x in (0, 1, 5, -3))
        bad = tuple(f"def f(x):\n    return {m} * x + {q + d}" for d in range(1, self.k + 1))
        return Problem(
            pid,
            kind,
            f"{tag} Write a Python function f(x) that returns {m} times x plus {q}.",
            f"def f(x):\n    return {m} * x + {q}",
            bad,
            tests=tests,
        )
