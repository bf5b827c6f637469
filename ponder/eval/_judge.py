"""LLM-as-judge scoring: a model decides whether a final answer matches the reference,
for answers no program can compare (words, conditions, unusual forms).

The dataset's own scorer runs first; only what it rejects goes to the judge, so a judge
can add matches but never remove one the checker proved. The judge sees the problem,
the reference and the extracted final answer (not the whole response), at temperature 0:
equal answers to one problem get one judgement (memoised, and cached by the model
layer), which keeps judging cheap even with many candidates per item.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ponder.eval._datasets import AsyncScorer, Item, Scorer

__all__ = ["JudgeStats", "LLMJudge"]

JUDGE_SYSTEM = (
    "You are a strict grader. You verify whether a student's final answer is equivalent "
    "to the reference answer of a problem: the same value, set or expression in any "
    "equivalent form. Reason in one or two sentences, then end with 'Verdict: yes' or "
    "'Verdict: no'."
)
JUDGE_TEMPLATE = (
    "{question}\n\nReference answer: {reference}\n\n"
    "Student's final answer: \\boxed{{{answer}}}\n\n"
    "Is the student's final answer equivalent to the reference answer?"
)


class JudgeStats(BaseModel):
    """What the judge did over an eval: how often it was asked and what it added."""

    model_config = ConfigDict(frozen=False)

    checked_by_program: int = Field(0, description="Accepted by the dataset's own scorer.")
    asked: int = Field(0, description="Distinct (item, answer) pairs sent to the judge.")
    accepted: int = Field(0, description="Of those, judged equivalent.")
    unparsed: int = Field(0, description="Judge replies with no verdict (counted as no).")
    tokens: int = 0


class LLMJudge:
    """Score with ``base`` (the dataset's scorer), then ask ``model`` about the rest.

    ``model``: a model reference string or a :class:`~ponder.Model`; a string is opened
    per event loop (so the judge also works in Ray workers) and closed by :meth:`aclose`.
    """

    kind = "judge"

    def __init__(
        self,
        model: Any,
        base: Scorer | AsyncScorer | None = None,
        *,
        system: str = JUDGE_SYSTEM,
        template: str = JUDGE_TEMPLATE,
        max_tokens: int = 256,
    ) -> None:
        self.model, self.base = model, base
        self.system, self.template, self.max_tokens = system, template, max_tokens
        self.stats = JudgeStats()
        self._memo: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._opened: Any = None

    @property
    def name(self) -> str:
        return self.model if isinstance(self.model, str) else str(self.model.id)

    def _model(self) -> Any:
        if not isinstance(self.model, str):
            return self.model
        if self._opened is None:  # the running loop's engine builds it (and closes it)
            from ponder.engine import engine_for

            self._opened = engine_for().model(self.model)
        return self._opened

    async def ascore(self, item: Item, answer: str | None, text: str) -> bool:
        if self.base is not None:
            try:
                if isinstance(self.base, AsyncScorer):
                    ok = await self.base.ascore(item, answer, text)
                else:
                    ok = await asyncio.to_thread(self.base, item, answer, text)
                if ok:
                    self.stats.checked_by_program += 1
                    return True
            except Exception:
                pass
        if answer is None or item.answer is None:
            return False
        from ponder.agents import normalize_answer

        key = (item.id, normalize_answer(answer, "math") or answer)
        pending = self._memo.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._memo[key] = pending
            try:
                pending.set_result(await self._ask(item, answer))
            except BaseException as e:
                del self._memo[key]
                pending.set_exception(e)
                pending.exception()  # retrieved: the caller gets it below
                raise
        return await pending

    async def _ask(self, item: Item, answer: str) -> bool:
        from ponder.agents import parse_verdict
        from ponder.types import Message

        prompt = self.template.format(question=item.question, reference=item.answer, answer=answer)
        out = await self._model().generate(
            [Message.system(self.system), Message.user(prompt)],
            temperature=0.0,
            max_tokens=self.max_tokens,
            seed=0,
        )
        self.stats.asked += 1
        self.stats.tokens += out.usage.total_tokens
        verdict = parse_verdict(out.text)
        if verdict is None:
            self.stats.unparsed += 1
        self.stats.accepted += bool(verdict)
        return bool(verdict)

    async def aclose(self) -> None:
        """Forget the judge's model (its engine owns and closes it)."""
        self._opened = None
