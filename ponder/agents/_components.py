"""The reasoning components: generate, vote (fixed and adaptive), verify, critique, rank,
fuse, best-of-N and refine. Each has a typed config and one entry point,
``await component(pool) -> pool``; none mutates its input.

Prompts follow one protocol (answers in ``\\boxed{}``, candidates listed as
``Candidate k:``, verdicts as ``Verdict: yes|no``, rankings as ``Ranking: [2] > [1]``) that
real models follow well and the stand-in server's oracle understands (docs/standin.md).
Output that does not parse marks the candidate (``error``) or the pool (``notes``); it
never ends the run.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import importlib
import json
import re
from collections.abc import Callable, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    Protocol,
    TypeVar,
    overload,
    runtime_checkable,
)

from pydantic import BaseModel, ConfigDict, Field

from ponder.agents._answers import (
    AnswerKind,
    answers_equivalent,
    normalize_answer,
)
from ponder.agents._state import Candidate, Pool, Provenance, Spend, VoteResult
from ponder.agents._vote import leader_settled_probability, vote, vote_values
from ponder.errors import ConfigurationError
from ponder.types import Choice, Completion, GenerateParams, Message

if TYPE_CHECKING:  # at run time components only call the models they are given
    from ponder.backends import Model

__all__ = [
    "COMPONENTS",
    "LIVE_TEXT",
    "AdaptiveVote",
    "BestOfN",
    "Component",
    "ComponentInfo",
    "Critic",
    "Fuser",
    "Generate",
    "ModelVerifier",
    "ProgrammaticVerifier",
    "Ranker",
    "Refine",
    "Vote",
    "find_component",
    "get_component",
    "load_components",
    "register_component",
    "unregister_component",
]

T = TypeVar("T")

GENERATOR_SYSTEM = (
    "Solve the problem. Think step by step, then give the final answer as \\boxed{ANSWER}."
)
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
REVISER_SYSTEM = (
    "Revise your answer using the feedback. Think step by step, then give the final answer "
    "as \\boxed{ANSWER}."
)

_VERDICT = re.compile(r"verdict\s*[:\-]?\s*\**\s*(yes|no|correct|incorrect)\b", re.IGNORECASE)
_RANKING = re.compile(r"ranking\s*:\s*(.+)", re.IGNORECASE)
_CRITIQUE_LINE = re.compile(r"^\s*(?:Candidate\s*(\d+)\s*:|\[(\d+)\])\s*(.*)$", re.MULTILINE)


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    slot: str | None = Field(
        None,
        description="Where the component sits in a workflow (node.position; set by the "
        "workflow). Ids of the candidates it makes start with it, so two slots that call "
        "one model keep their candidates apart.",
    )


def _origin(name: str, cfg: _Config, model: str, layer: int | None = None) -> str:
    """The prefix of a component's candidate ids: its slot where it has one."""
    if cfg.slot is not None:
        return f"{cfg.slot}:{model}:"
    return f"{name}:{model}:" if layer is None else f"{name}:{model}:{layer}:"


@runtime_checkable
class Component(Protocol):
    """``await component(pool)`` returns a new pool.

    A component keeps only its configuration and the models it was given: it is
    stateless between calls and reentrant, so one instance serves every concurrent run.
    Per-call data travels in the pool."""

    name: ClassVar[str]

    async def __call__(self, pool: Pool) -> Pool: ...


Arity = Literal["none", "one", "many"]
Builder = Callable[[Any, "list[Model]", "Model | None"], Any]


@dataclass(frozen=True)
class ComponentInfo:
    """What a workflow needs to know to build a registered component from YAML: its config
    class, how many models it takes, whether it takes a step scorer (``prm_model``) and
    how to build it."""

    name: str
    cls: type[Any]
    config: type[BaseModel] | None
    models: Arity
    prm: bool
    build: Builder

    @property
    def needs_model(self) -> bool:
        return self.models != "none"


COMPONENTS: dict[str, ComponentInfo] = {}
"""The one component registry: name -> :class:`ComponentInfo` (YAML reads it).

Built-in components register when their module is first imported; ``ponder.agents.COMPONENTS``
and :func:`load_components` import them all, :func:`get_component` just the one it needs."""

# where each built-in component is defined (tests/test_agents.py keeps this true)
BUILTIN_MODULES: dict[str, str] = {
    **dict.fromkeys(
        ("adaptive_vote", "best_of_n", "check", "critique", "fuse", "generate", "rank",
         "refine", "verify", "vote"),
        "ponder.agents._components",
    ),
    "agent": "ponder.agents._agent",
    **dict.fromkeys(("beam_search", "first_finish", "mcts", "particle_filter"),
                    "ponder.agents._search"),
    **dict.fromkeys(("cascade", "confidence_vote", "early_rejection", "speculative_reasoning"),
                    "ponder.agents._adaptive"),
    **dict.fromkeys(("execution_vote", "judge_tests", "run_tests", "write_tests"),
                    "ponder.agents._code"),
    "program": "ponder.agents._program",
    "reward_rank": "ponder.agents._reward",
}  # fmt: skip


def load_components() -> dict[str, ComponentInfo]:
    """Import every built-in component's module; the full registry."""
    for module in sorted(set(BUILTIN_MODULES.values())):
        importlib.import_module(module)
    return COMPONENTS


def find_component(name: str) -> ComponentInfo | None:
    """The registry entry of ``name``, importing only its built-in module; None if unknown."""
    info = COMPONENTS.get(name)
    if info is None and name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
        info = COMPONENTS.get(name)
    return info


def _default_builder(cls: type[Any], models: Arity) -> Builder:
    def build(config: Any, ms: list[Model], _p: Model | None) -> Any:
        if models == "none":
            return cls(config)
        return cls(ms if models == "many" else ms[0], config)

    return build


@overload
def register_component(cls: type[T]) -> type[T]: ...
@overload
def register_component(
    *,
    config: type[BaseModel] | None = None,
    models: Arity = "one",
    prm: bool = False,
    build: Builder | None = None,
) -> Callable[[type[T]], type[T]]: ...
def register_component(
    cls: type[T] | None = None,
    *,
    config: type[BaseModel] | None = None,
    models: Arity = "one",
    prm: bool = False,
    build: Builder | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Class decorator: make a component addressable by its ``name`` (workflows, YAML).

    ``@register_component(config=MyConfig, models="one")`` declares what YAML needs:
    the config class its parameters validate against, how many models it takes
    (``none``, ``one``, ``many``), whether it takes a step scorer (``prm``), and
    optionally ``build(config, models, prm_model)``; by default it is built as
    ``cls(config)``, ``cls(model, config)`` or ``cls(models, config)`` (a component that
    takes a step scorer gives its own ``build``). A bare ``@register_component``
    registers a component for Python use only (YAML refuses it with a message).
    """

    def deco(c: type[T]) -> type[T]:
        name = getattr(c, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{c.__name__} needs a class attribute 'name'")
        old = COMPONENTS.get(name)
        if old is not None and old.cls is not c:
            raise ConfigurationError(f"a component named {name!r} is already registered")
        if prm and build is None:
            raise ConfigurationError(
                f"{c.__name__} takes a step scorer (prm=True): give build=(config, models, "
                "prm_model) -> component"
            )
        COMPONENTS[name] = ComponentInfo(
            name, c, config, models, prm, build or _default_builder(c, models)
        )
        return c

    return deco(cls) if cls is not None else deco


def unregister_component(name: str) -> None:
    """Remove a registered component (tests that register their own)."""
    COMPONENTS.pop(name, None)


def get_component(name: str) -> ComponentInfo:
    """The registry entry of ``name``; unknown names get a suggestion."""
    info = find_component(name)
    if info is None:
        raise ConfigurationError(unknown_component(name))
    return info


def unknown_component(name: str) -> str:
    """The message for an unknown component: the nearest name and every known one."""
    known = load_components()
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown component {name!r}{hint} (known: {', '.join(sorted(known))})"


def _spend(c: Completion) -> Spend:
    return Spend.of(c.usage, c.cost, c.requests, c.cached_usage, c.saved_cost)


def _listing(candidates: Sequence[Candidate]) -> str:
    return "\n\n".join(f"Candidate {i + 1}: {c.text.strip()}" for i, c in enumerate(candidates))


@functools.lru_cache(maxsize=256)
def _messages(system: str | None, user: str) -> tuple[Message, ...]:
    """The prompt's messages; built once per prompt (they are frozen), since every sample
    and every round of a loop asks with the same ones."""
    return ((Message.system(system),) if system else ()) + (Message.user(user),)


"""Builds the agent that one model's samples are when ``generate`` has tools (set by the
agent module, which imports this one)."""

LIVE_TEXT: ContextVar[Callable[[str], object] | None] = ContextVar("ponder_live_text", default=None)
"""Where the step that writes the final answer sends its text as it is generated (set by a
workflow run with live answers, for its last step only); None: no live answer."""


async def _complete(model: Model, messages: tuple[Message, ...], **kw: Any) -> Completion:
    """``model.generate`` (one sample) as it is, or streamed to the live sink when this
    step writes the run's final answer live."""
    sink = LIVE_TEXT.get()
    if sink is not None and kw.get("n", 1) == 1:
        return await model.generate_streamed(messages, sink, **kw)
    return await model.generate(messages, **kw)


@functools.lru_cache(maxsize=1024)
def _sampling(
    n: int, temperature: float | None, max_tokens: int | None, seed: int | None, logprobs: bool
) -> GenerateParams:
    """One params object per setting: the model layer resolves each object once."""
    return GenerateParams.build(
        n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=logprobs
    )


def _sample_provenance(
    component: str, model: Model, layer: int, seed: int | None, index: int
) -> Provenance:
    """Sample ``index`` of a step seeded ``seed`` (sample i uses seed + offset + i)."""
    s = None if seed is None else seed + model.offset + index
    return _provenance(component, model.id, layer, s, index)


@functools.lru_cache(maxsize=4096)
def _provenance(
    component: str, model: str | None, layer: int, seed: int | None, index: int
) -> Provenance:
    """Provenance is frozen and the same for sample ``index`` of a step in every run."""
    return Provenance(component=component, model=model, layer=layer, seed=seed, index=index)


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
class ModelVerifier:
    """A model reasons about each candidate, then says 'Verdict: yes' or 'Verdict: no'.

    Sets ``scores[score_name]`` to the share of yes verdicts among those that parsed and
    ``verdicts[score_name]`` to the majority; a candidate with no answer, or whose
    verdicts never parse, gets ``None`` and a recorded reason.
    """

    name: ClassVar[str] = "verify"

    def __init__(self, model: Model, config: VerifierConfig | None = None):
        self.model = model
        self.config = config or VerifierConfig()

    async def check(self, pool: Pool, c: Candidate, index: int = 0) -> tuple[Candidate, Spend]:
        """Verify one candidate; ``index`` offsets the seed so verdicts are independent."""
        cfg = self.config
        if c.answer is None:
            return c.judged(cfg.score_name, None, "no answer to verify"), Spend()
        user = (
            f"Problem: {pool.query}\n\nProposed solution:\n{c.text.strip()}\n\n"
            f"Proposed answer: \\boxed{{{c.answer}}}"
        )
        out = await self.model.generate(
            _messages(cfg.system, user),
            n=cfg.samples,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=None if cfg.seed is None else cfg.seed + 1000 * index,
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
class Critic:
    """One call reviews every candidate; each gets its critique (strengths, weaknesses)."""

    name: ClassVar[str] = "critique"

    def __init__(self, model: Model, config: JudgeConfig | None = None):
        self.model = model
        self.config = config or JudgeConfig()

    async def __call__(self, pool: Pool) -> Pool:
        if not pool.candidates:
            return pool.noted("critique: no candidates")
        cfg = self.config
        out = await self.model.generate(
            _messages(
                cfg.system or CRITIC_SYSTEM,
                f"Problem: {pool.query}\n\n{_listing(pool.candidates)}",
            ),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
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
class Ranker:
    """Rank candidates (one listwise call, or a knockout of batches) and keep the top k.

    Sets ``scores['rank']`` (1.0 for the best, falling linearly). An unparseable ranking
    keeps the original order and notes it.
    """

    name: ClassVar[str] = "rank"

    def __init__(self, model: Model, config: RankerConfig | None = None):
        self.model = model
        self.config = config or RankerConfig()

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
        out = await self.model.generate(
            _messages(cfg.system or RANKER_SYSTEM, f"Problem: {pool.query}\n\n{listing}"),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=None if cfg.seed is None else cfg.seed + seed_offset,
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
class Fuser:
    """Mixture-of-agents: synthesise the candidates into ``n`` new ones (which replace them).

    The fused answer is the pool's ``final`` (with ``n > 1``, the most common one; a later
    step such as ``vote`` or ``best_of_n`` may choose again)."""

    name: ClassVar[str] = "fuse"

    def __init__(self, model: Model, config: FuserConfig | None = None):
        self.model = model
        self.config = config or FuserConfig()

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
        out = await _complete(
            self.model,
            _messages(
                cfg.system or FUSER_SYSTEM,
                f"Problem: {pool.query}\n\n{_listing(cands)}\n{critiques}{limit}",
            ),
            n=cfg.n,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
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
                out = await self.model.generate(
                    [
                        Message.system(REVISER_SYSTEM),
                        Message.user(pool.query),
                        Message.assistant(c.text),
                        Message.user(f"Feedback: {feedback}\nRevise your answer."),
                    ],
                    temperature=cfg.temperature,
                    max_tokens=cfg.max_tokens,
                    seed=None if cfg.seed is None else cfg.seed + 1000 * rnd + i,
                )
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
