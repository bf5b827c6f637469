"""Judging candidates: verify (by a model or a check), critique, rank and fuse, each a
typed config and a :class:`~ponder.agents.Component`. The prompts list candidates as
``Candidate k:`` and ask for ``Verdict: yes|no`` and ``Ranking: [2] > [1]``, which real
models follow well and the stand-in server's oracle understands (docs/standin.md).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
)

from pydantic import Field

from ponder.agents._answers import (
    AnswerKind,
    answers_equivalent,
)
from ponder.agents._base import (
    ModelStep,
    _ask,
    _Config,
    _listing,
    _messages,
    _origin,
    _spend,
    register_component,
)
from ponder.agents._state import Candidate, Pool, Provenance, Spend
from ponder.errors import ConfigurationError

if TYPE_CHECKING:  # at run time components only call the models they are given
    pass


__all__ = [
    "CheckConfig",
    "Critic",
    "FilterConfig",
    "Fuser",
    "FuserConfig",
    "JudgeConfig",
    "ModelVerifier",
    "ProgrammaticVerifier",
    "Ranker",
    "RankerConfig",
    "VerifierConfig",
    "check_in_order",
    "parse_critiques",
    "parse_ranking",
    "parse_verdict",
]

VERIFIER_SYSTEM = (
    "You are a meticulous verifier. Check the proposed answer to the problem step by step. "
    "End with exactly 'Verdict: yes' if it is correct or 'Verdict: no' if it is not."
)
CRITIC_SYSTEM = (
    "You are a critic. For each candidate answer, write one line 'Candidate k: ...' naming "
    "its strengths and weaknesses. Do not solve the problem yourself."
)
RANKER_SYSTEM = (
    "You rank candidate answers from best to worst. Reply with one line of the form "
    "'Ranking: [2] > [1] > [3]' that lists every candidate once."
)
FUSER_SYSTEM = (
    "You fuse several candidate answers into one better answer: keep what is right, fix "
    "what is wrong. Think step by step, then give the final answer as \\boxed{ANSWER}."
)

_VERDICT = re.compile(r"verdict\s*[:\-]?\s*\**\s*(yes|no|correct|incorrect)\b", re.IGNORECASE)
_RANKING = re.compile(r"ranking\s*:\s*(.+)", re.IGNORECASE)
_CRITIQUE_LINE = re.compile(r"^\s*(?:Candidate\s*(\d+)\s*:|\[(\d+)\])\s*(.*)$", re.MULTILINE)


# -- verify ---------------------------------------------------------------------------------


class FilterConfig(_Config):
    """What a checking component (verify, judge_tests) passes on."""

    keep: Literal["all", "accepted"] = Field(
        "all",
        description="'all': every candidate goes on, scored; 'accepted': rejected candidates "
        "are dropped (Archon's verifier), unless none is accepted, when all go on (as in "
        "Archon) and the pool notes it.",
    )
    first_k: int | None = Field(
        None,
        ge=1,
        description="Check candidates in order and stop once the first k are accepted; "
        "only those k go on (Archon's first_k). Checks run in parallel up to 'parallel'; "
        "those still running are cancelled.",
    )
    parallel: int = Field(
        0, ge=0, description="Checks in flight at once (0: all). 1 spends exactly as Archon."
    )


class VerifierConfig(FilterConfig):
    samples: int = Field(1, ge=1, description="Verdicts per candidate; the score is the yes-rate.")
    temperature: float | None = 0.0
    max_tokens: int | None = None
    seed: int | None = 0
    system: str = VERIFIER_SYSTEM
    score_name: str = "verifier"


async def check_in_order(
    pool: Pool,
    check: Callable[[Candidate, int], Coroutine[Any, Any, tuple[Candidate, Spend]]],
    cfg: FilterConfig,
    score_name: str,
    label: str,
) -> Pool:
    """Run ``check`` over the pool's candidates and keep what ``cfg`` says (see
    :class:`FilterConfig`): all of them, the accepted ones, or the first k accepted."""
    cands = list(pool.candidates)
    gate = asyncio.Semaphore(cfg.parallel) if cfg.parallel else None

    async def one(i: int) -> tuple[Candidate, Spend]:
        if gate is None:
            return await check(cands[i], i)
        async with gate:
            return await check(cands[i], i)

    done: dict[int, tuple[Candidate, Spend]] = {}
    if cfg.first_k is None:
        done = dict(enumerate(await asyncio.gather(*(one(i) for i in range(len(cands))))))
    else:
        limit = cfg.parallel or len(cands)
        running: dict[asyncio.Future[tuple[Candidate, Spend]], int] = {}
        cut: int | None = None
        start = 0
        try:
            while cut is None and (running or start < len(cands)):
                while start < len(cands) and len(running) < limit:  # start no more than needed
                    running[asyncio.ensure_future(check(cands[start], start))] = start
                    start += 1
                finished, _ = await asyncio.wait(running, return_when="FIRST_COMPLETED")
                for t in finished:
                    done[running.pop(t)] = t.result()
                accepted = 0
                for i in range(len(cands)):  # the prefix whose checks are all back
                    if i not in done:
                        break
                    accepted += done[i][0].verdicts.get(score_name) is True
                    if accepted == cfg.first_k:
                        cut = i
                        break
        finally:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if cut is not None:
            done = {i: r for i, r in done.items() if i <= cut}
    spend = sum((s for _, s in done.values()), Spend())
    checked = [done[i][0] for i in sorted(done)]
    if cfg.first_k is None and cfg.keep == "all":
        return pool.with_candidates(checked, spend)
    kept = [c for c in checked if c.verdicts.get(score_name) is True]
    if cfg.first_k is not None:
        kept = kept[: cfg.first_k]
    if kept:
        return pool.with_candidates(kept, spend)
    result = pool.with_candidates(checked, spend)
    return result.noted(f"{label}: no candidate was accepted; all go on")


def parse_verdict(text: str) -> bool | None:
    """``True``/``False`` from the last 'Verdict: yes|no' in ``text``, else None."""
    found = _VERDICT.findall(text)
    if not found:
        return None
    return found[-1].lower() in ("yes", "correct")


@register_component(config=VerifierConfig)
class ModelVerifier(ModelStep[VerifierConfig]):
    """A model reasons about each candidate, then says 'Verdict: yes' or 'Verdict: no'.

    Sets ``scores[score_name]`` to the share of yes verdicts among those that parsed and
    ``verdicts[score_name]`` to the majority; a candidate with no answer, or whose
    verdicts never parse, gets ``None`` and a recorded reason.
    """

    name: ClassVar[str] = "verify"

    async def check(self, pool: Pool, c: Candidate, index: int = 0) -> tuple[Candidate, Spend]:
        """Verify one candidate; ``index`` offsets the seed so verdicts are independent."""
        cfg = self.config
        if c.answer is None:
            return c.judged(cfg.score_name, None, "no answer to verify"), Spend()
        user = (
            f"Problem: {pool.query}\n\nProposed solution:\n{c.text.strip()}\n\n"
            f"Proposed answer: \\boxed{{{c.answer}}}"
        )
        out = await _ask(
            self.model, cfg, _messages(cfg.system, user), n=cfg.samples, seed_offset=1000 * index
        )
        verdicts = [parse_verdict(t) for t in out.texts]
        parsed = [v for v in verdicts if v is not None]
        if not parsed:
            judged = c.judged(cfg.score_name, None, "the verifier said neither yes nor no")
            return judged, _spend(out)
        rate = sum(parsed) / len(parsed)
        return c.scored(cfg.score_name, rate).judged(cfg.score_name, rate >= 0.5), _spend(out)

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        return await check_in_order(
            pool, lambda c, i: self.check(pool, c, i), cfg, cfg.score_name, self.name
        )


class CheckConfig(_Config):
    kind: AnswerKind = Field("math", description="How answers are compared.")
    score_name: str = "check"


@register_component(
    config=CheckConfig,
    models="none",
    build=lambda c, _m, _p: ProgrammaticVerifier.against_reference(c.kind, c.score_name),
)
class ProgrammaticVerifier:
    """A verifier in code: ``check(answer, candidate) -> bool | None``.

    ``ProgrammaticVerifier.math(reference)`` checks mathematical equivalence with a known
    answer (``math-verify`` when installed); ``against_reference(kind)`` checks against
    each pool's own ``reference`` (what YAML's ``check`` step does, e.g. in evaluation).
    """

    name: ClassVar[str] = "check"

    def __init__(
        self,
        check: Callable[[str, Candidate], bool | None] | None = None,
        *,
        score_name: str = "check",
        reference_kind: AnswerKind | None = None,
    ):
        if check is None and reference_kind is None:
            raise ConfigurationError(
                "ProgrammaticVerifier needs a check function or reference_kind"
            )
        self.check = check
        self.score_name = score_name
        self.reference_kind = reference_kind

    @classmethod
    def against_reference(
        cls, kind: AnswerKind = "math", score_name: str = "check"
    ) -> ProgrammaticVerifier:
        """Compare each answer with the pool's ``reference`` (None where it has none)."""
        return cls(score_name=score_name, reference_kind=kind)

    @classmethod
    def math(cls, reference: str, kind: AnswerKind = "math") -> ProgrammaticVerifier:
        return cls(
            lambda answer, _c: answers_equivalent(answer, reference, kind), score_name="math"
        )

    async def __call__(self, pool: Pool) -> Pool:
        out = []
        ref, kind = pool.reference, self.reference_kind
        for c in pool.candidates:
            if c.answer is None:
                out.append(c.judged(self.score_name, None, "no answer to check"))
                continue
            if self.check is None and ref is None:
                out.append(c.judged(self.score_name, None, "the query has no reference"))
                continue
            try:
                if self.check is not None:
                    ok = self.check(c.answer, c)
                else:
                    assert ref is not None
                    assert kind is not None
                    ok = answers_equivalent(c.answer, ref, kind)
            except Exception as e:
                out.append(c.judged(self.score_name, None, f"checker failed: {e!r}"))
                continue
            c2 = c.judged(self.score_name, ok)
            out.append(c2.scored(self.score_name, float(ok)) if ok is not None else c2)
        return pool.with_candidates(out)


# -- critique, rank, fuse -------------------------------------------------------------------


class JudgeConfig(_Config):
    temperature: float | None = 0.0
    max_tokens: int | None = None
    seed: int | None = 0
    system: str | None = None


def parse_critiques(text: str, count: int) -> dict[int, str]:
    """``{candidate index: critique}`` from 'Candidate k: ...' lines (1-based in text)."""
    out: dict[int, str] = {}
    for m in _CRITIQUE_LINE.finditer(text):
        k = int(m.group(1) or m.group(2)) - 1
        if 0 <= k < count and m.group(3).strip():
            out.setdefault(k, m.group(3).strip())
    return out


def parse_ranking(text: str, count: int) -> list[int] | None:
    """0-based candidate indexes, best first, from 'Ranking: [2] > [1] > [3]'.

    Unknown or repeated numbers are dropped; candidates the ranking leaves out follow in
    their original order. None when no ranking line is found.
    """
    found = _RANKING.findall(text)
    if not found:
        return None
    order: list[int] = []
    for num in re.findall(r"\d+", found[-1]):
        k = int(num) - 1
        if 0 <= k < count and k not in order:
            order.append(k)
    if not order:
        return None
    return order + [k for k in range(count) if k not in order]


@register_component(config=JudgeConfig)
class Critic(ModelStep[JudgeConfig]):
    """One call reviews every candidate; each gets its critique (strengths, weaknesses)."""

    name: ClassVar[str] = "critique"

    async def __call__(self, pool: Pool) -> Pool:
        if not pool.candidates:
            return pool.noted("critique: no candidates")
        cfg = self.config
        out = await _ask(
            self.model,
            cfg,
            _messages(
                cfg.system or CRITIC_SYSTEM,
                f"Problem: {pool.query}\n\n{_listing(pool.candidates)}",
            ),
        )
        found = parse_critiques(out.text, len(pool.candidates))
        cands = [
            c.model_copy(update={"critiques": (*c.critiques, found[i])}) if i in found else c
            for i, c in enumerate(pool.candidates)
        ]
        result = pool.with_candidates(cands, _spend(out))
        missing = len(pool.candidates) - len(found)
        return (
            result.noted(f"critique: {missing} candidates got no critique") if missing else result
        )


class RankerConfig(JudgeConfig):
    top_k: int | None = Field(None, ge=1, description="Keep only the best k.")
    mode: str = Field("listwise", pattern="^(listwise|pairwise)$")
    batch_size: int | None = Field(
        None,
        ge=2,
        description="Show the ranker at most this many candidates per call (Archon's "
        "ranker_batch_size). A larger pool is ranked as a knockout: each batch is ranked, "
        "the batch winners are ranked against each other, and so on; pairwise mode is a "
        "knockout with batches of 2.",
    )
    use_critiques: bool = Field(
        False,
        description="Show each candidate's critiques (from an earlier critique step) to the "
        "ranker, as Archon's use_critiques does.",
    )


@register_component(config=RankerConfig)
class Ranker(ModelStep[RankerConfig]):
    """Rank candidates (one listwise call, or a knockout of batches) and keep the top k.

    Sets ``scores['rank']`` (1.0 for the best, falling linearly). An unparseable ranking
    keeps the original order and notes it.
    """

    name: ClassVar[str] = "rank"

    async def _rank(
        self, pool: Pool, cands: Sequence[Candidate], seed_offset: int
    ) -> tuple[list[int] | None, Spend]:
        cfg = self.config
        listing = _listing(cands)
        if cfg.use_critiques:
            listing += "".join(
                f"\nCritique of candidate {i + 1}: {'; '.join(c.critiques)}"
                for i, c in enumerate(cands)
                if c.critiques
            )
        out = await _ask(
            self.model,
            cfg,
            _messages(cfg.system or RANKER_SYSTEM, f"Problem: {pool.query}\n\n{listing}"),
            seed_offset=seed_offset,
        )
        return parse_ranking(out.text, len(cands)), _spend(out)

    @property
    def batch(self) -> int | None:
        """Candidates per ranking call (None: all at once)."""
        return 2 if self.config.mode == "pairwise" else self.config.batch_size

    async def _knockout(
        self, pool: Pool, cands: Sequence[Candidate]
    ) -> tuple[list[int], Spend, int]:
        """Order (best first) from a knockout of batches; the spend and unparsed count.

        Each round ranks its batches in parallel; batch winners go on to the next round.
        Those knocked out follow the winner, later rounds first, then by their place in
        their batch, then by batch order."""
        size = self.batch or len(cands)
        alive = list(range(len(cands)))
        out_rounds: list[list[int]] = []
        spend = Spend()
        unparsed = 0
        round_no = 0
        while len(alive) > 1:
            batches = [alive[i : i + size] for i in range(0, len(alive), size)]
            results = await asyncio.gather(
                *(
                    self._rank(pool, [cands[k] for k in b], round_no * 1000 + j)
                    for j, b in enumerate(batches)
                    if len(b) > 1
                )
            )
            winners: list[int] = []
            placed: list[tuple[int, int, int]] = []  # (place in batch, batch, candidate)
            it = iter(results)
            for j, b in enumerate(batches):
                if len(b) == 1:
                    winners.append(b[0])
                    continue
                order, s = next(it)
                spend = spend + s
                if order is None:
                    unparsed += 1
                    order = list(range(len(b)))
                winners.append(b[order[0]])
                placed += [(place, j, b[k]) for place, k in enumerate(order[1:], start=1)]
            out_rounds.append([k for _, _, k in sorted(placed)])
            alive = winners
            round_no += 1
        order = alive + [k for r in reversed(out_rounds) for k in r]
        return order, spend, unparsed

    async def __call__(self, pool: Pool) -> Pool:
        cands = list(pool.candidates)
        if len(cands) <= 1:
            return pool
        order, spend, unparsed = await self._knockout(pool, cands)
        n = len(order)
        ranked = [cands[k].scored("rank", 1.0 - pos / n) for pos, k in enumerate(order)]
        if self.config.top_k is not None:
            ranked = ranked[: self.config.top_k]
        result = pool.with_candidates(ranked, spend)
        return result.noted(f"rank: {unparsed} rankings did not parse") if unparsed else result


class FuserConfig(JudgeConfig):
    n: int = Field(1, ge=1, description="Fused candidates to write.")
    temperature: float | None = 0.7
    answer_kind: AnswerKind = "auto"
    layer: int = 1
    top_k: int | None = Field(
        None,
        ge=1,
        description="Fuse only the k best candidates by their 'rank' score (an earlier rank "
        "step), or the first k when unranked (Archon's top_k_generations).",
    )
    length_control: bool = Field(
        False,
        description="Tell the fuser its answer may be no longer than the longest candidate "
        "(Archon's length_control).",
    )


@register_component(config=FuserConfig)
class Fuser(ModelStep[FuserConfig]):
    """Mixture-of-agents: synthesise the candidates into ``n`` new ones (which replace them).

    The fused answer is the pool's ``final`` (with ``n > 1``, the most common one; a later
    step such as ``vote`` or ``best_of_n`` may choose again)."""

    name: ClassVar[str] = "fuse"

    def inputs(self, pool: Pool) -> list[Candidate]:
        """The candidates this fuser reads: all, or the ``top_k`` best ranked."""
        cands = list(pool.candidates)
        k = self.config.top_k
        if k is None or k >= len(cands):
            return cands
        if any("rank" in c.scores for c in cands):
            order = sorted(range(len(cands)), key=lambda i: -(cands[i].scores.get("rank") or 0.0))
            return [cands[i] for i in sorted(order[:k])]
        return cands[:k]

    async def __call__(self, pool: Pool) -> Pool:
        if not pool.candidates:
            return pool.noted("fuse: no candidates to fuse")
        cfg = self.config
        cands = self.inputs(pool)
        critiques = "".join(
            f"\nCritique of candidate {i + 1}: {'; '.join(c.critiques)}"
            for i, c in enumerate(cands)
            if c.critiques
        )
        limit = (
            "\nThe fused answer may be no longer than the longest candidate."
            if cfg.length_control
            else ""
        )
        out = await _ask(
            self.model,
            cfg,
            _messages(
                cfg.system or FUSER_SYSTEM,
                f"Problem: {pool.query}\n\n{_listing(cands)}\n{critiques}{limit}",
            ),
            n=cfg.n,
            live=True,
        )
        parents = tuple(c.id for c in cands)
        fused = []
        for ch in out.choices:
            fused.append(
                Candidate.read(
                    id=_origin(self.name, cfg, self.model.id, cfg.layer) + str(ch.index),
                    text=ch.text,
                    kind=cfg.answer_kind,
                    provenance=Provenance(
                        component=self.name,
                        model=self.model.id,
                        layer=cfg.layer,
                        seed=None if cfg.seed is None else cfg.seed + ch.index,
                        index=ch.index,
                        parents=parents,
                    ),
                    finish_reason=ch.finish_reason,
                )
            )
        result = pool.with_candidates(fused, _spend(out))
        answers = [c.answer for c in fused if c.answer is not None]
        if not answers:
            return result
        final = max(answers, key=answers.count)  # the first of the most common
        return result.model_copy(update={"final": final})
