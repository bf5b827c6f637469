"""Compute-adaptive reasoning: spend samples and strong-model tokens only where they help.

* :class:`Cascade`: answer with the cheapest model first; escalate when confidence (sample
  agreement, mean token probability, or a verifier) is below a threshold.
* :class:`BatchAdaptive`: one sample budget across a batch of questions; easy questions
  stop after a few samples, unsettled ones get more.
* :class:`ConfidenceVote`: votes weighted by each sample's mean token probability (the
  inverse perplexity, as in RPC), next to plain and verifier-weighted votes.
* :class:`EarlyRejection`: sampled step-by-step solutions are scored at checkpoints and
  the weakest stop there instead of being finished.
* :class:`SpeculativeReasoning`: a small model drafts each step, a large model scores it
  and writes only the steps it rejects.
* :func:`verifier_quality`: precision and recall of a verifier against ground truth.

Every decision rule is a pure function (``cascade_accepts``, ``next_to_sample``,
``confidence_weight``, ``survivors``, ``accept_step``) tested on scripted inputs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.agents._answers import AnswerKind
from ponder.agents._base import _Config, register_component
from ponder.agents._components import Generate, GenerateConfig
from ponder.agents._judges import ModelVerifier
from ponder.agents._search import (
    START,
    STEP_SYSTEM,
    ProcessRewardModel,
    StepSearch,
    register_search,
)
from ponder.agents._state import Candidate, Pool, Provenance, Spend
from ponder.agents._vote import leader_settled_probability, vote
from ponder.backends import Model
from ponder.errors import ConfigurationError
from ponder.types import Message

__all__ = [
    "BatchAdaptive",
    "BatchAdaptiveConfig",
    "Cascade",
    "CascadeConfig",
    "ConfidenceVote",
    "ConfidenceVoteConfig",
    "EarlyRejection",
    "EarlyRejectionConfig",
    "SpeculativeConfig",
    "SpeculativeReasoning",
    "VerifierQuality",
    "accept_step",
    "cascade_accepts",
    "confidence_weight",
    "next_to_sample",
    "survivors",
    "verifier_quality",
]

Signal = Literal["agreement", "probability", "verifier"]


# -- cascade --------------------------------------------------------------------------------


class CascadeConfig(_Config):
    samples: int = Field(3, ge=1, description="Samples per stage.")
    threshold: float = Field(0.67, ge=0, le=1, description="Confidence needed to stop.")
    signal: Signal = "agreement"
    temperature: float = 0.7
    max_tokens: int | None = None
    answer_kind: AnswerKind = "auto"
    seed: int = 0


def cascade_accepts(
    candidates: Sequence[Candidate], signal: Signal, threshold: float, kind: AnswerKind = "auto"
) -> tuple[bool, float]:
    """(stop here?, confidence) for one stage's candidates.

    ``agreement``: the vote winner's share; ``probability``: the winner's samples' mean
    token probability (exp of mean logprob) times its share; ``verifier``: the share of the
    winner's samples the verifier accepted (score ``verifier``). No answer: (False, 0).
    """
    result = vote(candidates, kind=kind)
    if result.key is None:
        return False, 0.0
    winners = [
        c for c in candidates if c.answer is not None and vote([c], kind=kind).key == result.key
    ]
    if signal == "agreement":
        conf = result.support
    elif signal == "probability":
        probs = [math.exp(c.scores["mean_logprob"]) for c in winners if "mean_logprob" in c.scores]
        conf = (sum(probs) / len(probs) if probs else 0.0) * result.support
    else:
        conf = sum(c.scores.get("verifier", 0.0) for c in winners) / max(1, len(candidates))
    return conf >= threshold, conf


@register_component(config=CascadeConfig, models="many")
class Cascade:
    """Models from cheapest to strongest; each stage samples, and the cascade stops at the
    first stage whose confidence reaches the threshold (the last stage always answers)."""

    name: ClassVar[str] = "cascade"

    def __init__(
        self,
        models: Sequence[Model],
        config: CascadeConfig | None = None,
        *,
        verifier: ModelVerifier | None = None,
    ) -> None:
        if not models:
            raise ConfigurationError("Cascade needs at least one model")
        self.models = list(models)
        self.config = config or CascadeConfig()
        if self.config.signal == "verifier" and verifier is None:
            raise ConfigurationError("a cascade with signal='verifier' needs verifier=")
        self.verifier = verifier

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        out = pool
        for stage, model in enumerate(self.models):
            gen = Generate(
                model,
                GenerateConfig(
                    n=cfg.samples,
                    temperature=cfg.temperature,
                    max_tokens=cfg.max_tokens,
                    seed=cfg.seed,
                    layer=stage,
                    logprobs=cfg.signal == "probability",
                    answer_kind=cfg.answer_kind,
                ),
            )
            before = len(out.candidates)
            out = await gen(out)
            if self.verifier is not None and cfg.signal == "verifier":
                out = await self.verifier(out)
            stage_cands = out.candidates[before:]
            ok, conf = cascade_accepts(stage_cands, cfg.signal, cfg.threshold, cfg.answer_kind)
            last = stage == len(self.models) - 1
            if ok or last:
                answer = vote(stage_cands, kind=cfg.answer_kind, seed=cfg.seed).answer
                why = "confident" if ok else "last stage"
                return out.model_copy(update={"final": answer}).noted(
                    f"cascade: stage {stage} ({model.id}) answered {answer!r}, "
                    f"{cfg.signal} {conf:.2f} ({why})"
                )
            out = out.noted(
                f"cascade: stage {stage} ({model.id}) {cfg.signal} {conf:.2f} < "
                f"{cfg.threshold}; escalating"
            )
        return out  # pragma: no cover - the last stage always returns


# -- adaptive sample counts across a batch --------------------------------------------------


class BatchAdaptiveConfig(_Config):
    budget: int = Field(ge=1, description="Samples for the whole batch.")
    min_samples: int = Field(2, ge=1)
    max_samples: int = Field(16, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    answer_kind: AnswerKind = "auto"
    seed: int = 0


def next_to_sample(
    tallies: Sequence[Sequence[int]], drawn: Sequence[int], *, max_samples: int, confidence: float
) -> int | None:
    """The question to sample next: among the unsettled ones (leader not yet settled at
    ``confidence``, fewer than ``max_samples``), the one with the fewest samples, then the
    least settled leader, then the lowest index; None when there is none. Breadth first:
    every unsettled question gets a chance to settle before any gets many samples."""
    best: tuple[float, float, int] | None = None
    for i, (counts, n) in enumerate(zip(tallies, drawn, strict=True)):
        if n >= max_samples:
            continue
        top = [*sorted(counts, reverse=True), 0, 0]
        settled = leader_settled_probability(top[0], top[1])
        if settled >= confidence:
            continue
        key = (float(n), settled, i)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


class BatchAdaptive:
    """``await BatchAdaptive(generate, config).run(pools)``: every question gets
    ``min_samples``; the rest of the budget goes one sample at a time to the least
    settled question (:func:`next_to_sample`) until all are settled or it is spent."""

    name: ClassVar[str] = "batch_adaptive"

    def __init__(self, generate: Generate, config: BatchAdaptiveConfig) -> None:
        self.generate = generate
        self.config = config

    async def run(self, pools: Sequence[Pool]) -> list[Pool]:
        cfg = self.config
        per_call = len(self.generate.models)
        cands: list[list[Candidate]] = [[] for _ in pools]
        spends = [Spend() for _ in pools]
        first = max(1, cfg.min_samples // per_call)
        if first * per_call * len(pools) > cfg.budget:
            raise ConfigurationError(
                f"a budget of {cfg.budget} samples cannot give {len(pools)} questions "
                f"{cfg.min_samples} each; raise the budget or lower min_samples"
            )
        results = await asyncio.gather(*(self.generate.sample(p, first) for p in pools))
        for i, (new, s) in enumerate(results):
            cands[i] += new
            spends[i] = spends[i] + s
        used = sum(len(c) for c in cands)

        def tally(cs: list[Candidate]) -> list[int]:
            return [int(v) for v in vote(cs, kind=cfg.answer_kind).tally.values()]

        while used + per_call <= cfg.budget:
            pick = next_to_sample(
                [tally(c) for c in cands],
                [len(c) for c in cands],
                max_samples=cfg.max_samples,
                confidence=cfg.confidence,
            )
            if pick is None:
                break
            new, s = await self.generate.sample(pools[pick], 1, start=len(cands[pick]) // per_call)
            cands[pick] += new
            spends[pick] = spends[pick] + s
            used += len(new)
        out = []
        for p, cs, s in zip(pools, cands, spends, strict=True):
            result = vote(cs, kind=cfg.answer_kind, seed=cfg.seed)
            done = p.with_candidates([*p.candidates, *cs], s)
            out.append(
                done.model_copy(update={"final": result.answer}).noted(
                    f"batch adaptive: {len(cs)} samples, {result.answer!r} "
                    f"with {result.support:.0%}"
                )
            )
        return out


# -- confidence-weighted vote ---------------------------------------------------------------


class ConfidenceVoteConfig(_Config):
    weight: Literal["probability", "verifier_probability"] = "probability"
    answer_kind: AnswerKind = "auto"
    seed: int = 0


def confidence_weight(candidate: Candidate, how: str = "probability") -> float:
    """A sample's vote weight: its mean token probability ``exp(mean logprob)`` (1 when it
    has no logprobs), times its verifier score for ``verifier_probability``."""
    lp = candidate.scores.get("mean_logprob")
    w = math.exp(lp) if lp is not None else 1.0
    if how == "verifier_probability":
        w *= candidate.scores.get("verifier", 0.0)
    return w


@register_component(config=ConfidenceVoteConfig, models="none")
class ConfidenceVote:
    """Self-consistency with each sample weighted by :func:`confidence_weight` (RPC-style
    perplexity-consistency). Generate with ``logprobs=True`` to give it a signal."""

    name: ClassVar[str] = "confidence_vote"

    def __init__(self, config: ConfidenceVoteConfig | None = None) -> None:
        self.config = config or ConfidenceVoteConfig()

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        weighted = [
            c.model_copy(
                update={"scores": {**c.scores, "confidence": confidence_weight(c, cfg.weight)}}
            )
            for c in pool.candidates
        ]
        result = vote(weighted, kind=cfg.answer_kind, weight="confidence", seed=cfg.seed)
        return (
            pool.with_candidates(weighted)
            .model_copy(update={"final": result.answer})
            .noted(f"confidence vote: {result.answer!r} with {result.support:.0%} of the weight")
        )


# -- early rejection ------------------------------------------------------------------------


class EarlyRejectionConfig(_Config):
    samples: int = Field(8, ge=1)
    checkpoint_steps: int = Field(2, ge=1, description="Steps between two scorings.")
    keep: float = Field(0.5, gt=0, le=1, description="Share kept at each checkpoint.")
    min_keep: int = Field(2, ge=1)
    max_steps: int = Field(12, ge=1)
    temperature: float = 0.8
    max_step_tokens: int = Field(256, ge=1)
    answer_kind: AnswerKind = "auto"
    seed: int = 0


def survivors(scores: Sequence[float], keep: float, min_keep: int) -> list[int]:
    """Indexes of the partial solutions that go on: the best ``ceil(keep * n)`` (at least
    ``min_keep``) by score, ties to the lower index; in index order."""
    n = len(scores)
    k = min(n, max(min_keep, math.ceil(keep * n)))
    order = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
    return sorted(order)


@dataclass
class _Partial:
    text: str
    steps: int = 0
    done: bool = False


@register_search
class EarlyRejection(StepSearch[EarlyRejectionConfig]):
    """Sample ``samples`` step-by-step solutions; every ``checkpoint_steps`` steps a
    process reward model scores the unfinished ones and only :func:`survivors` go on; the
    rest stop (their tokens are not spent). Finished solutions are then voted on."""

    name: ClassVar[str] = "early_rejection"

    async def _step(self, query: str, p: _Partial, seed: int) -> Spend:
        cfg = self.config
        line, spend = await _next_step(
            self.model, query, p.text, cfg.temperature, cfg.max_step_tokens, seed
        )
        p.steps += 1
        if line:
            p.text += line + "\n"
        p.done = not line or "\\boxed{" in line or p.steps >= cfg.max_steps
        return spend

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        live = [_Partial("") for _ in range(cfg.samples)]
        finished: list[_Partial] = []
        rejected = 0
        spend = Spend()
        rnd = 0
        while live:
            for _ in range(cfg.checkpoint_steps):
                todo = [p for p in live if not p.done]
                if not todo:
                    break
                rnd += 1
                spends = await asyncio.gather(
                    *(
                        self._step(pool.query, p, cfg.seed + 1000 * rnd + i)
                        for i, p in enumerate(todo)
                    )
                )
                spend = spend + sum(spends, Spend())
            finished += [p for p in live if p.done]
            live = [p for p in live if not p.done]
            if len(live) <= cfg.min_keep:
                continue
            scored = await asyncio.gather(
                *(self.prm.score(pool.query, START + p.text) for p in live)
            )
            values = []
            for scores, s in scored:
                spend = spend + s
                values.append(scores[-1] if scores else 0.5)
            keep = survivors(values, cfg.keep, cfg.min_keep)
            rejected += len(live) - len(keep)
            live = [live[i] for i in keep]
        cands = [
            Candidate.read(
                id=f"{cfg.slot or 'early_rejection'}:{i}",
                text=START + p.text,
                kind=cfg.answer_kind,
                provenance=Provenance(component=self.name, model=self.model.id, index=i),
            )
            for i, p in enumerate(finished)
        ]
        result = vote(cands, kind=cfg.answer_kind, seed=cfg.seed)
        out = pool.with_candidates([*pool.candidates, *cands], spend)
        return out.model_copy(update={"final": result.answer}).noted(
            f"early rejection: {len(finished)} finished, {rejected} stopped early; "
            f"{result.answer!r} with {result.support:.0%}"
        )


# -- speculative reasoning ------------------------------------------------------------------


class SpeculativeConfig(_Config):
    threshold: float = Field(0.6, ge=0, le=1, description="Score a drafted step needs.")
    max_steps: int = Field(12, ge=1)
    temperature: float = 0.7
    max_step_tokens: int = Field(256, ge=1)
    answer_kind: AnswerKind = "auto"
    seed: int = 0


def accept_step(scores: Sequence[float] | None, threshold: float) -> bool:
    """A drafted step is kept when the judge's score of the newest step reaches the
    threshold; unparseable scores reject it (the large model then writes the step)."""
    return scores is not None and len(scores) > 0 and scores[-1] >= threshold


@register_component(
    config=SpeculativeConfig,
    models="many",
    prm=True,
    build=lambda c, ms, p: SpeculativeReasoning(ms[0], ms[-1], ProcessRewardModel(p or ms[-1]), c),
)
class SpeculativeReasoning:
    """``small`` drafts each step; ``judge`` (a process reward model on the large model)
    scores it; the large model rewrites only the rejected steps. Reports the share of
    steps accepted and the tokens generated by each model."""

    name: ClassVar[str] = "speculative_reasoning"

    def __init__(
        self,
        small: Model,
        large: Model,
        judge: ProcessRewardModel,
        config: SpeculativeConfig | None = None,
    ) -> None:
        self.small, self.large, self.judge = small, large, judge
        self.config = config or SpeculativeConfig()

    async def _draft(self, model: Model, query: str, text: str, seed: int) -> tuple[str, Spend]:
        cfg = self.config
        return await _next_step(model, query, text, cfg.temperature, cfg.max_step_tokens, seed)

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        text = ""
        small_spend, large_spend = Spend(), Spend()
        accepted = rewritten = 0
        for step in range(cfg.max_steps):
            line, s = await self._draft(self.small, pool.query, text, cfg.seed + step)
            small_spend = small_spend + s
            scores: list[float] | None = None
            if line:
                scores, js = await self.judge.score(pool.query, START + text + line + "\n")
                large_spend = large_spend + js
            if line and accept_step(scores, cfg.threshold):
                accepted += 1
            else:
                line, s = await self._draft(self.large, pool.query, text, cfg.seed + step)
                large_spend = large_spend + s
                rewritten += 1
            if not line:
                break
            text += line + "\n"
            if "\\boxed{" in line:
                break
        cand = Candidate.read(
            id="speculative:0",
            text=START + text,
            kind=cfg.answer_kind,
            provenance=Provenance(component=self.name, model=self.small.id),
        )
        total = accepted + rewritten
        out = pool.with_candidates([*pool.candidates, cand], small_spend + large_spend)
        out = out.model_copy(
            update={
                "final": cand.answer,
                "ledger": {
                    **out.ledger,
                    f"speculative:{self.small.id}": small_spend,
                    f"speculative:{self.large.id}": large_spend,
                },
            }
        )
        return out.noted(
            f"speculative: {accepted}/{total} drafted steps accepted; generated tokens "
            f"small {small_spend.completion_tokens}, large {large_spend.completion_tokens}"
        )


# -- verifier quality -----------------------------------------------------------------------


class VerifierQuality(BaseModel):
    """How a verifier's verdicts compare with the truth."""

    model_config = ConfigDict(frozen=True)

    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int
    abstained: int

    @property
    def precision(self) -> float:
        d = self.true_positives + self.false_positives
        return self.true_positives / d if d else 0.0

    @property
    def recall(self) -> float:
        d = self.true_positives + self.false_negatives
        return self.true_positives / d if d else 0.0

    @property
    def false_positive_rate(self) -> float:
        d = self.false_positives + self.true_negatives
        return self.false_positives / d if d else 0.0

    def ceiling(self, p: float) -> float:
        """P(right | accepted) for a generator right with probability ``p``: what
        resampling until the verifier accepts can reach at most."""
        yes_right = p * self.recall
        yes_wrong = (1 - p) * self.false_positive_rate
        return yes_right / (yes_right + yes_wrong) if yes_right + yes_wrong else 0.0


def verifier_quality(verdicts: Sequence[bool | None], truth: Sequence[bool]) -> VerifierQuality:
    """Confusion counts of ``verdicts`` (None: no verdict) against ``truth``."""
    tp = fp = tn = fn = ab = 0
    for v, t in zip(verdicts, truth, strict=True):
        if v is None:
            ab += 1
        elif v and t:
            tp += 1
        elif v:
            fp += 1
        elif t:
            fn += 1
        else:
            tn += 1
    return VerifierQuality(
        true_positives=tp, false_positives=fp, true_negatives=tn, false_negatives=fn, abstained=ab
    )


async def _next_step(
    model: Model, query: str, text: str, temperature: float, max_tokens: int, seed: int
) -> tuple[str, Spend]:
    """The next reasoning line after the steps ``text`` (prefilled), and what it cost."""
    prefix = START + text
    out = await model.generate(
        [*_sys(STEP_SYSTEM), _user(query)],
        prefill=prefix,
        stop=["\n"],
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
    )
    body = out.text[len(prefix) :] if out.text.startswith(prefix) else out.text
    return body.strip("\n").split("\n")[0].strip(), Spend.of(
        out.usage, out.cost, out.requests, out.cached_usage, out.saved_cost
    )


def _sys(text: str) -> list[Message]:
    return [Message.system(text)]


def _user(text: str) -> Message:
    return Message.user(text)
