"""Improving on the pool: best-of-N (the candidate a verifier scores highest) and refine
(revise an answer with a verifier's or critic's feedback, for a few rounds). Each has a
typed config and one entry point, ``await component(pool) -> pool``."""

from __future__ import annotations

import asyncio
from typing import (
    TYPE_CHECKING,
    ClassVar,
)

from pydantic import Field

from ponder.agents._answers import (
    AnswerKind,
    normalize_answer,
)
from ponder.agents._base import (
    _ask,
    _Config,
    _spend,
    register_component,
)
from ponder.agents._judges import Critic, ModelVerifier, ProgrammaticVerifier
from ponder.agents._state import Candidate, Pool, Spend
from ponder.agents._vote import vote
from ponder.types import Message

if TYPE_CHECKING:  # at run time components only call the models they are given
    from ponder.backends import Model


__all__ = ["BestOfN", "BestOfNConfig", "Refine", "RefineConfig"]

REVISER_SYSTEM = (
    "Revise your answer using the feedback. Think step by step, then give the final answer "
    "as \\boxed{ANSWER}."
)


# -- best-of-N, refine ----------------------------------------------------------------------


class BestOfNConfig(_Config):
    score: str = Field("verifier", description="The score to maximise.")
    tie_break: str = Field("vote", pattern="^(vote|first)$")
    answer_kind: AnswerKind = "auto"


@register_component(config=BestOfNConfig, models="none")
class BestOfN:
    """Pick the candidate with the highest ``score`` (ties: the most voted answer, then the
    first). Candidates without the score rank last; with none scored, the vote decides."""

    name: ClassVar[str] = "best_of_n"

    def __init__(self, config: BestOfNConfig | None = None):
        self.config = config or BestOfNConfig()

    async def __call__(self, pool: Pool) -> Pool:
        if not pool.candidates:
            return pool.noted("best_of_n: no candidates")
        cfg = self.config
        tally = vote(pool.candidates, kind=cfg.answer_kind).tally

        def key(ic: tuple[int, Candidate]) -> tuple[float, float, int]:
            i, c = ic
            s = c.scores.get(cfg.score, float("-inf"))
            v = tally.get(normalize_answer(c.answer, cfg.answer_kind) or "", 0.0)
            return (s, v if cfg.tie_break == "vote" else 0.0, -i)

        _, best = max(enumerate(pool.candidates), key=key)
        return pool.model_copy(update={"final": best.answer}).noted(
            f"best_of_n: {best.id} ({cfg.score}={best.scores.get(cfg.score)})"
        )


class RefineConfig(_Config):
    max_rounds: int = Field(3, ge=1)
    temperature: float | None = 0.7
    max_tokens: int | None = None
    seed: int | None = 0
    answer_kind: AnswerKind = "auto"


@register_component(
    config=RefineConfig,
    build=lambda c, ms, _p: Refine(ms[0], ModelVerifier(ms[0]), config=c),
)
class Refine:
    """Feedback then revision, per candidate, until the verifier accepts or rounds run out.

    Each round: the critic's feedback on a rejected candidate, then a revision that
    replaces it; accepted candidates are left alone.
    """

    name: ClassVar[str] = "refine"

    def __init__(
        self,
        model: Model,
        verifier: ModelVerifier | ProgrammaticVerifier,
        critic: Critic | None = None,
        config: RefineConfig | None = None,
    ):
        self.model = model
        self.verifier = verifier
        self.critic = critic or Critic(model)
        self.config = config or RefineConfig()

    def _name(self) -> str:
        v = self.verifier
        return v.config.score_name if isinstance(v, ModelVerifier) else v.score_name

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        name = self._name()
        pool = await self.verifier(pool)
        for round_no in range(1, cfg.max_rounds + 1):
            todo = [i for i, c in enumerate(pool.candidates) if c.verdicts.get(name) is not True]
            if not todo:
                break

            async def revise(
                i: int, pool: Pool = pool, rnd: int = round_no
            ) -> tuple[int, Candidate, Spend]:
                c = pool.candidates[i]
                single = pool.with_candidates([c])
                reviewed = await self.critic(single)
                rc = reviewed.candidates[0]
                feedback = rc.critiques[-1] if rc.critiques else "The answer may be wrong."
                revise = [
                    Message.system(REVISER_SYSTEM),
                    Message.user(pool.query),
                    Message.assistant(c.text),
                    Message.user(f"Feedback: {feedback}\nRevise your answer."),
                ]
                out = await _ask(self.model, cfg, revise, seed_offset=1000 * rnd + i)
                new = Candidate.read(
                    id=f"{c.id}/r{rnd}",
                    text=out.text,
                    kind=cfg.answer_kind,
                    critiques=(*c.critiques, feedback),
                    provenance=c.provenance.model_copy(
                        update={"component": self.name, "parents": (c.id,)}
                    ),
                )
                return i, new, (reviewed.spend - single.spend) + _spend(out)

            results = await asyncio.gather(*(revise(i) for i in todo))
            cands = list(pool.candidates)
            spend = Spend()
            for i, new, s in results:
                cands[i] = new
                spend = spend + s
            pool = await self.verifier(pool.with_candidates(cands, spend))
        accepted = sum(c.verdicts.get(name) is True for c in pool.candidates)
        return pool.noted(f"refine: {accepted}/{len(pool.candidates)} accepted")
