"""Sampling and voting: generate, vote and adaptive vote, each a typed config and a
:class:`~ponder.agents.Component`. Answers are asked for in ``\\boxed{}``, which real
models follow well and the stand-in server's oracle understands (docs/standin.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
)

from pydantic import BaseModel, Field

from ponder.agents._answers import (
    AnswerKind,
)
from ponder.agents._base import (
    LIVE_TEXT,
    _Config,
    _messages,
    _origin,
    _provenance,
    _sample_provenance,
    _sampling,
    _spend,
    get_component,
    register_component,
)
from ponder.agents._state import Candidate, Pool, Spend, VoteResult
from ponder.agents._vote import leader_settled_probability, vote, vote_values
from ponder.errors import ConfigurationError
from ponder.types import Choice, Message

if TYPE_CHECKING:  # at run time components only call the models they are given
    from ponder.backends import Model


__all__ = [
    "AdaptiveVote",
    "AdaptiveVoteConfig",
    "Generate",
    "GenerateConfig",
    "Vote",
    "VoteConfig",
]

GENERATOR_SYSTEM = (
    "Solve the problem. Think step by step, then give the final answer as \\boxed{ANSWER}."
)


# -- generate -------------------------------------------------------------------------------


class GenerateConfig(_Config):
    n: int = Field(8, ge=1, description="Samples per model.")
    temperature: float | None = 0.8
    max_tokens: int | None = None
    seed: int | None = 0
    system: str | None = GENERATOR_SYSTEM
    answer_kind: AnswerKind = "auto"
    replace: bool = Field(False, description="Replace the pool's candidates instead of adding.")
    layer: int = 0
    logprobs: bool = Field(False, description="Ask for logprobs; sets scores['mean_logprob'].")
    tools: tuple[str | dict[str, dict[str, Any] | None], ...] = Field(
        (),
        description="With tools, each sample is an agent run (a model calling these tools "
        "in a loop, as the agent component): names from the tool registry.",
    )
    output: type[BaseModel] | None = Field(
        None,
        description="Typed answers (Python): each sample is validated as this pydantic model "
        "(Candidate.value; the answer is its JSON); vote with key=... or fields=True.",
    )
    max_steps: int = Field(8, ge=1, description="With tools: model turns of one sample.")


@register_component(config=GenerateConfig, models="many")
class Generate:
    """N samples from one model, or from each of several models (an ensemble).

    ``n`` goes out as one request where the backend supports it. Sample ``i`` uses seed
    ``seed + i``, so a rerun (or a larger ``n``) reuses the response cache.
    """

    name: ClassVar[str] = "generate"

    def __init__(self, models: Model | Sequence[Model], config: GenerateConfig | None = None):
        self.models = list(models) if isinstance(models, Sequence) else [models]
        if not self.models:
            raise ConfigurationError("Generate needs at least one model")
        self.config = config or GenerateConfig()
        self._agents: list[Any] = []
        if self.config.tools:  # each sample a run of the registered `agent` component
            agent = get_component("agent").cls
            self._agents = [agent.for_generate(m, self.config) for m in self.models]

    def sample(
        self, pool: Pool, n: int, start: int = 0
    ) -> Coroutine[Any, Any, tuple[list[Candidate], Spend]]:
        """Samples ``start .. start+n-1`` of every model (no pool change); await it."""
        system = pool.system if pool.system is not None else self.config.system
        messages = _messages(system, pool.query)
        if len(self.models) == 1:  # the one model's coroutine itself: no task, no frame
            return self._one(self.models[0], messages, n, start)
        return self._ensemble(messages, n, start)

    async def _ensemble(
        self, messages: tuple[Message, ...], n: int, start: int
    ) -> tuple[list[Candidate], Spend]:
        results = list(
            await asyncio.gather(*(self._one(m, messages, n, start) for m in self.models))
        )
        cands = [c for cs, _ in results for c in cs]
        spend = sum((s for _, s in results), Spend())
        return cands, spend

    async def _one(
        self, model: Model, messages: tuple[Message, ...], n: int, start: int
    ) -> tuple[list[Candidate], Spend]:
        cfg = self.config
        sink = LIVE_TEXT.get() if len(self.models) == 1 else None  # one writer, or none
        if start == 0 or model.cache is not None:
            # with a cache, samples 0..start-1 are hits and only the rest is requested
            params = _sampling(start + n, cfg.temperature, cfg.max_tokens, cfg.seed, cfg.logprobs)
            if cfg.output is not None:  # typed answers: validated, repaired once
                c = await model.generate(messages, params, output=cfg.output)
            elif sink is not None and start + n == 1:  # the run's answer, written live
                c = await model.generate_streamed(messages, sink, params)
            else:
                c = await model.generate(messages, params)
            choices: Sequence[Choice] = c.choices[start:] if start else c.choices
        else:  # the same request the cache would have sent for the missing samples
            c = await model.generate(
                messages,
                n=n,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                seed=None if cfg.seed is None else cfg.seed + start,
                logprobs=cfg.logprobs,
            )
            choices = [replace(ch, index=start + ch.index) for ch in c.choices]
        prefix = _origin(self.name, cfg, model.id, cfg.layer)
        out = []
        for ch in choices:
            if cfg.output is not None:
                out.append(self._typed(prefix, model, ch))
                continue
            lp = ch.mean_logprob
            out.append(
                Candidate.read(
                    id=prefix + str(ch.index),
                    text=ch.text,
                    kind=cfg.answer_kind,
                    provenance=_provenance(
                        self.name,
                        model.id,
                        cfg.layer,
                        None if cfg.seed is None else cfg.seed + model.offset + ch.index,
                        ch.index,
                    ),
                    finish_reason=ch.finish_reason,
                    scores={} if lp is None else {"mean_logprob": lp},
                )
            )
        return out, _spend(c)

    def _typed(self, prefix: str, model: Model, ch: Choice) -> Candidate:
        cfg = self.config
        assert cfg.output is not None
        prov = _sample_provenance(self.name, model, cfg.layer, cfg.seed, ch.index)
        if isinstance(ch.parsed, BaseModel):
            value = ch.parsed.model_dump(mode="json")
            return Candidate(id=prefix + str(ch.index), text=ch.text, provenance=prov,
                             answer=json.dumps(value, sort_keys=True), value=value,
                             finish_reason=ch.finish_reason)  # fmt: skip
        return Candidate(id=prefix + str(ch.index), text=ch.text, provenance=prov,
                         error=f"the reply is not a valid {cfg.output.__name__}",
                         finish_reason=ch.finish_reason)  # fmt: skip

    async def __call__(self, pool: Pool) -> Pool:
        if self._agents:
            runs = await asyncio.gather(
                *(a.run(pool, i) for a in self._agents for i in range(self.config.n))
            )
            cands, spend = [c for c, _ in runs], sum((s for _, s in runs), Spend())
        else:
            cands, spend = await self.sample(pool, self.config.n)
        if self.config.replace:
            return pool.with_candidates(cands, spend)
        return pool.with_candidates(pool.candidates + tuple(cands), spend)


# -- vote -----------------------------------------------------------------------------------


class VoteConfig(_Config):
    answer_kind: AnswerKind = "auto"
    weight: str | None = Field(None, description="Weight votes by this score (e.g. verifier).")
    seed: int = 0
    key: str | None = Field(
        None, description="Typed answers: vote on this field (dotted for a nested one)."
    )
    fields: bool = Field(False, description="Typed answers: vote on each field on its own.")


@register_component(config=VoteConfig, models="none")
class Vote:
    """Self-consistency: the most common (or most heavily weighted) answer wins."""

    name: ClassVar[str] = "vote"

    def __init__(self, config: VoteConfig | None = None):
        self.config = config or VoteConfig()

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        if cfg.key is not None or cfg.fields:
            return self._typed(pool)
        result = vote(pool.candidates, kind=cfg.answer_kind, weight=cfg.weight, seed=cfg.seed)
        note = (
            f"vote: {result.answer!r} with {result.support:.0%} of {result.counted} counted"
            f" ({result.abstained} abstained)"
        )
        return pool.model_copy(update={"final": result.answer, "vote": result}).noted(note)

    def _typed(self, pool: Pool) -> Pool:
        """A vote over typed answers (``Candidate.value``): on one field, or field by
        field; the final answer is the winning object as JSON."""
        cfg = self.config
        values = [c.value for c in pool.candidates]
        winner, tallies = vote_values(values, key=cfg.key if not cfg.fields else None,
                                      seed=cfg.seed)  # fmt: skip
        counted = sum(v is not None for v in values)
        if winner is None:
            return pool.model_copy(update={"final": None}).noted(
                f"typed vote: no typed answer among {len(values)} candidates"
            )
        final = json.dumps(winner, sort_keys=True)
        main = tallies.get(cfg.key or "", {}) if not cfg.fields else {}
        top = max(main.values(), default=0.0)
        result = VoteResult(
            answer=final, key=final, tally=main, support=top / counted if counted else 0.0,
            counted=counted, abstained=len(values) - counted,
        )  # fmt: skip
        how = f"on {cfg.key!r}" if not cfg.fields else "field by field"
        detail = "; ".join(
            f"{f}: " + ", ".join(f"{k} x{v:g}" for k, v in list(t.items())[:3])
            for f, t in tallies.items()
        )
        return pool.model_copy(update={"final": final, "vote": result}).noted(
            f"typed vote {how}: {final} ({detail})"
        )


class AdaptiveVoteConfig(_Config):
    max_samples: int = Field(16, ge=1)
    min_samples: int = Field(3, ge=1)
    batch: int = Field(1, ge=1, description="Samples drawn between two stopping checks.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    answer_kind: AnswerKind = "auto"
    seed: int = 0


@register_component(
    config=AdaptiveVoteConfig,
    models="many",
    build=lambda c, ms, _p: AdaptiveVote(Generate(ms, GenerateConfig(slot=c.slot)), c),
)
class AdaptiveVote:
    """Sample until the leading answer is settled, then vote (Adaptive-Consistency).

    After each batch, stop when P(leader beats runner-up | counts) >= ``confidence``
    (:func:`leader_settled_probability`) or at ``max_samples``. The result reports the
    samples used and saved against always drawing ``max_samples``.
    """

    name: ClassVar[str] = "adaptive_vote"

    def __init__(self, generate: Generate, config: AdaptiveVoteConfig | None = None):
        self.generate = generate
        self.config = config or AdaptiveVoteConfig()

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        cands: list[Candidate] = []
        spend = Spend()
        per_call = len(self.generate.models)
        result = vote([], kind=cfg.answer_kind, seed=cfg.seed)
        while len(cands) < cfg.max_samples:
            want = cfg.min_samples if not cands else cfg.batch
            n = max(1, min(want, (cfg.max_samples - len(cands)) // per_call))
            new, s = await self.generate.sample(pool, n, start=len(cands) // per_call)
            cands += new
            spend = spend + s
            result = vote(cands, kind=cfg.answer_kind, seed=cfg.seed)
            counts = [*sorted(result.tally.values(), reverse=True), 0.0, 0.0]
            if (
                len(cands) >= cfg.min_samples
                and leader_settled_probability(int(counts[0]), int(counts[1])) >= cfg.confidence
            ):
                break
        result = result.model_copy(
            update={"samples_used": len(cands), "samples_saved": cfg.max_samples - len(cands)}
        )
        out = pool.with_candidates([*pool.candidates, *cands], spend)
        return out.model_copy(update={"final": result.answer, "vote": result}).noted(
            f"adaptive vote: {result.answer!r} after {len(cands)} samples "
            f"({result.samples_saved} saved)"
        )
