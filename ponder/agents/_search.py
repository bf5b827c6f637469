"""Step-level search over reasoning steps: beam search, MCTS, particle filtering, and
first-finish sampling.

A partial solution is text the model continues through ``prefill`` (so the model's
provider must support prefill: vLLM, SGLang, llama.cpp, Anthropic, local); one step is one
line (``stop=["\\n"]``). A step whose line holds a final answer (``\\boxed{}``) ends the
solution. A :class:`ProcessRewardModel` scores every step of a partial solution; search
keeps, expands or resamples partial solutions by those scores.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from ponder.agents._answers import AnswerKind
from ponder.agents._base import (
    C,
    ModelStep,
    _ask,
    _Config,
    _messages,
    _spend,
    register_component,
)
from ponder.agents._components import GENERATOR_SYSTEM
from ponder.agents._state import Candidate, Pool, Provenance, Spend
from ponder.agents._vote import vote
from ponder.backends import Model

__all__ = [
    "MCTS",
    "BeamSearch",
    "BeamSearchConfig",
    "FirstFinish",
    "FirstFinishConfig",
    "MCTSConfig",
    "ParticleFilter",
    "ParticleFilterConfig",
    "ProcessRewardModel",
    "StepConfig",
    "StepSearch",
    "parse_step_scores",
    "register_search",
]

STEP_SYSTEM = (
    "Solve the problem step by step. Write one step per line as 'Step k: ...', then a last "
    "line 'The answer is \\boxed{ANSWER}.'"
)
PRM_SYSTEM = (
    "You are a process reward model. Judge each step of the partial solution. Reply with "
    "one line 'Step scores: s1, s2, ...' giving, for every step, the probability (0 to 1) "
    "that it is correct."
)
START = "Let me work through this step by step.\n"
_SCORES = re.compile(r"step scores\s*:\s*(.+)", re.IGNORECASE)
_FLOAT = re.compile(r"\d*\.?\d+(?:[eE][-+]?\d+)?")


def parse_step_scores(text: str) -> list[float] | None:
    """Scores from 'Step scores: 0.9, 0.2' (clipped to [0, 1]); None if absent."""
    found = _SCORES.findall(text)
    if not found:
        return None
    values = [min(1.0, max(0.0, float(v))) for v in _FLOAT.findall(found[-1])]
    return values or None


class StepConfig(_Config):
    """How steps are generated and scored."""

    temperature: float = 0.8
    max_steps: int = Field(12, ge=1, description="Depth limit of a solution.")
    max_step_tokens: int = Field(256, ge=1)
    seed: int = 0
    system: str = STEP_SYSTEM
    start: str = START
    aggregate: Literal["last", "min", "mean"] = Field(
        "last", description="A partial solution's value from its step scores."
    )
    answer_kind: AnswerKind = "auto"


class ProcessRewardModel:
    """Scores every step of a partial solution with a model (``Step scores: ...``)."""

    def __init__(self, model: Model, *, system: str = PRM_SYSTEM, seed: int = 0):
        self.model = model
        self.system = system
        self.seed = seed

    async def score(self, query: str, partial: str) -> tuple[list[float] | None, Spend]:
        out = await self.model.generate(
            _messages(self.system, f"Problem: {query}\n\nPartial solution:\n{partial}"),
            temperature=0.0,
            seed=self.seed,
            max_tokens=256,
        )
        return parse_step_scores(out.text), _spend(out)


@dataclass
class _Node:
    text: str
    depth: int = 0
    steps: list[float] = field(default_factory=list)
    terminal: bool = False
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    closed: bool = False

    def value(self, how: str) -> float:
        if not self.steps:
            return 0.5
        if how == "min":
            return min(self.steps)
        if how == "mean":
            return sum(self.steps) / len(self.steps)
        return self.steps[-1]


class _Stepper:
    """Shared machinery: expand a partial solution by one step; score it."""

    name = "search"

    def __init__(self, model: Model, prm: ProcessRewardModel, step: StepConfig):
        self.model = model
        self.prm = prm
        self.step = step
        self.spend = Spend()
        self._calls = 0
        self.unparsed = 0  # this run's step scores that did not parse (the PRM is shared)

    async def expand(self, query: str, node: _Node, k: int) -> list[_Node]:
        """``k`` one-step continuations of ``node`` (one request with ``n=k``)."""
        cfg = self.step
        self._calls += 1
        prefix = cfg.start + node.text
        out = await self.model.generate(
            _messages(cfg.system, query),
            n=k,
            prefill=prefix,
            stop=["\n"],
            temperature=cfg.temperature,
            max_tokens=cfg.max_step_tokens,
            seed=cfg.seed + 7919 * self._calls,
            use_cache=True,
        )
        self.spend = self.spend + _spend(out)
        children = []
        for text in out.texts:
            line = text[len(prefix) :] if text.startswith(prefix) else text
            line = line.strip("\n").split("\n")[0].strip()
            if not line:
                continue
            terminal = "\\boxed{" in line or node.depth + 1 >= cfg.max_steps
            children.append(
                _Node(node.text + line + "\n", node.depth + 1, [], terminal, parent=node)
            )
        return children

    async def score(self, query: str, nodes: list[_Node]) -> None:
        async def one(n: _Node) -> None:
            scores, spend = await self.prm.score(query, self.step.start + n.text)
            self.spend = self.spend + spend
            self.unparsed += scores is None
            n.steps = scores if scores is not None else [0.5] * n.depth

        await asyncio.gather(*(one(n) for n in nodes))

    def finish(
        self, pool: Pool, finished: list[_Node], label: str, note: str, slot: str | None = None
    ) -> Pool:
        how = self.step.aggregate
        cands = []
        for i, n in enumerate(sorted(finished, key=lambda n: -n.value(how))):
            cands.append(
                Candidate.read(
                    id=f"{slot or label}:{i}",
                    text=self.step.start + n.text,
                    kind=self.step.answer_kind,
                    scores={"prm": n.value(how)},
                    provenance=Provenance(component=label, model=self.model.id, index=i),
                )
            )
        final = cands[0].answer if cands else None
        notes = note + (f"; {self.unparsed} step scores did not parse" if self.unparsed else "")
        out = pool.with_candidates([*pool.candidates, *cands], self.spend)
        return out.model_copy(update={"final": final}).noted(notes)


class StepSearch(ModelStep[C]):
    """The base of a search over steps: ``Search(model, prm, config=None)``; ``prm``
    scores partial solutions."""

    def __init__(self, model: Model, prm: ProcessRewardModel, config: C | None = None) -> None:
        super().__init__(model, config)
        self.prm = prm


S = TypeVar("S", bound=StepSearch[Any])


def register_search(cls: type[S]) -> type[S]:
    """Register a step search for workflows: its config class is its ``StepSearch[...]``
    subscript, and it is built as ``cls(model, ProcessRewardModel(prm_model or model),
    config)``."""
    return register_component(
        config=cls.config_type,
        prm=True,
        build=lambda c, ms, p: cls(ms[0], ProcessRewardModel(p or ms[0]), c),
    )(cls)


# -- beam search ----------------------------------------------------------------------------


class BeamSearchConfig(_Config):
    beam_width: int = Field(4, ge=1)
    expansions: int = Field(4, ge=1, description="Children per beam node per step.")
    step: StepConfig = Field(default_factory=StepConfig)


@register_search
class BeamSearch(StepSearch[BeamSearchConfig]):
    """Keep the ``beam_width`` best partial solutions (by step score) at every depth."""

    name: ClassVar[str] = "beam_search"

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        s = _Stepper(self.model, self.prm, cfg.step)
        beam = [_Node("")]
        finished: list[_Node] = []
        for _ in range(cfg.step.max_steps):
            groups = await asyncio.gather(*(s.expand(pool.query, n, cfg.expansions) for n in beam))
            children = [c for g in groups for c in g]
            if not children:
                break
            await s.score(pool.query, children)
            children.sort(key=lambda n: -n.value(cfg.step.aggregate))
            beam = []
            for c in children:
                if c.terminal:
                    finished.append(c)
                elif len(beam) < cfg.beam_width:
                    beam.append(c)
            if len(finished) >= cfg.beam_width or not beam:
                break
        finished = finished or beam
        return s.finish(
            pool, finished, self.name, f"beam search: {len(finished)} finished", cfg.slot
        )


# -- particle filtering -----------------------------------------------------------------------


class ParticleFilterConfig(_Config):
    particles: int = Field(8, ge=1)
    temperature: float = Field(
        0.1, gt=0, description="Softmax temperature turning step scores into weights."
    )
    step: StepConfig = Field(default_factory=StepConfig)


@register_search
class ParticleFilter(StepSearch[ParticleFilterConfig]):
    """Particle filtering over steps (Puri et al., 2025): extend every particle by one
    step, weight it by its step score, resample; finished particles leave the pool.

    The answer is the finished particles' weighted vote.
    """

    name: ClassVar[str] = "particle_filter"

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        rng = random.Random(cfg.step.seed)
        s = _Stepper(self.model, self.prm, cfg.step)
        alive = [_Node("") for _ in range(cfg.particles)]
        finished: list[_Node] = []
        for _ in range(cfg.step.max_steps):
            if not alive:
                break
            groups = await asyncio.gather(*(s.expand(pool.query, n, 1) for n in alive))
            stepped = [g[0] for g in groups if g]
            await s.score(pool.query, stepped)
            finished += [n for n in stepped if n.terminal]
            running = [n for n in stepped if not n.terminal]
            if not running:
                break
            values = [n.value(cfg.step.aggregate) / cfg.temperature for n in running]
            top = max(values)
            weights = [math.exp(v - top) for v in values]
            alive = rng.choices(running, weights=weights, k=cfg.particles - len(finished))
            alive = [_Node(n.text, n.depth, list(n.steps), False, n.parent) for n in alive]
        finished = finished or alive
        out = s.finish(
            pool, finished, self.name, f"particle filter: {len(finished)} finished", cfg.slot
        )
        mine = [c for c in out.candidates if c.provenance.component == self.name]
        result = vote(mine, kind=cfg.step.answer_kind, weight="prm", seed=cfg.step.seed)
        return out.model_copy(update={"final": result.answer})


# -- MCTS -------------------------------------------------------------------------------------


class MCTSConfig(_Config):
    iterations: int = Field(16, ge=1)
    expansions: int = Field(3, ge=1, description="Children created when a leaf is expanded.")
    exploration: float = Field(1.0, ge=0, description="UCT constant c.")
    value: Literal["prm", "rollout"] = Field(
        "prm", description="A new node's value: its step score, or the score of a rollout."
    )
    step: StepConfig = Field(default_factory=StepConfig)


@register_search
class MCTS(StepSearch[MCTSConfig]):
    """Monte Carlo tree search over steps with UCT selection.

    Each iteration selects a leaf by UCT (mean value + c * sqrt(ln N_parent / N)),
    expands it into ``expansions`` one-step children, values them (step score, or the
    final step score of a rollout to the end), and backs the values up. The answer is
    the finished solution with the best value (a rollout's end counts as finished).
    """

    name: ClassVar[str] = "mcts"

    def _select(self, root: _Node) -> _Node | None:
        """The leaf to expand next by UCT, or None once every path is finished."""
        c = self.config.exploration
        while not root.closed:
            node = root
            while node.children:
                open_children = [ch for ch in node.children if not ch.closed]
                if not open_children:
                    node.closed = True
                    break
                unvisited = [ch for ch in open_children if ch.visits == 0]
                if unvisited:
                    return unvisited[0]
                parent = node
                node = max(
                    open_children,
                    key=lambda ch: (
                        ch.value_sum / ch.visits
                        + c * math.sqrt(math.log(max(1, parent.visits)) / ch.visits)
                    ),
                )
            else:
                return node
        return None

    async def _rollout(self, s: _Stepper, query: str, node: _Node) -> _Node:
        cur = node
        while not cur.terminal:
            nxt = await s.expand(query, cur, 1)
            if not nxt:
                break
            cur = nxt[0]
        if cur is not node:
            await s.score(query, [cur])
        return cur

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        s = _Stepper(self.model, self.prm, cfg.step)
        root = _Node("")
        finished: list[_Node] = []
        how = cfg.step.aggregate
        for _ in range(cfg.iterations):
            leaf = self._select(root)
            if leaf is None:
                break
            children = await s.expand(pool.query, leaf, cfg.expansions)
            if not children:
                leaf.terminal = leaf.closed = True
                continue
            leaf.children = children
            await s.score(pool.query, children)
            for child in children:
                value = child.value(how)
                if cfg.value == "rollout" and not child.terminal:
                    end = await self._rollout(s, pool.query, child)
                    if end.terminal:
                        finished.append(end)
                    value = end.value(how)
                if child.terminal:
                    child.closed = True
                    finished.append(child)
                node: _Node | None = child
                while node is not None:
                    node.visits += 1
                    node.value_sum += value
                    node = node.parent
        if not finished:  # complete the most promising path
            best = root
            while best.children:
                best = max(best.children, key=lambda ch: ch.visits)
            finished = [await self._rollout(s, pool.query, best)]
        return s.finish(pool, finished, self.name, f"mcts: {len(finished)} finished", cfg.slot)


# -- first finish ----------------------------------------------------------------------------


class FirstFinishConfig(_Config):
    launch: int = Field(8, ge=1, description="Samples started.")
    keep: int = Field(3, ge=1, description="Samples kept: the first to finish.")
    temperature: float | None = 0.8
    max_tokens: int | None = None
    seed: int = 0
    system: str | None = None
    answer_kind: AnswerKind = "auto"


@register_component(config=FirstFinishConfig)
class FirstFinish(ModelStep[FirstFinishConfig]):
    """Start ``launch`` samples, keep the first ``keep`` to finish, cancel the rest, vote.

    Short answers are often right answers, and slow stragglers cost latency; cancelled
    requests stop (their connections close), so the tail is not paid for.
    """

    name: ClassVar[str] = "first_finish"

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        system = cfg.system or pool.system or GENERATOR_SYSTEM

        async def one(i: int) -> Candidate:
            out = await _ask(self.model, cfg, _messages(system, pool.query), seed_offset=i)
            return Candidate.read(
                id=f"{cfg.slot or self.name}:{i}",
                text=out.text,
                kind=cfg.answer_kind,
                provenance=Provenance(
                    component=self.name, model=self.model.id, seed=cfg.seed + i, index=i
                ),
                spend=_spend(out),
            )

        tasks = [asyncio.ensure_future(one(i)) for i in range(cfg.launch)]
        kept: list[Candidate] = []
        errors = 0
        try:
            for fut in asyncio.as_completed(tasks):
                try:
                    kept.append(await fut)
                except Exception:
                    errors += 1
                if len(kept) >= cfg.keep:
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        spend = sum((c.spend for c in kept), Spend())
        result = vote(kept, kind=cfg.answer_kind, seed=cfg.seed)
        out = pool.with_candidates([*pool.candidates, *kept], spend)
        cancelled = cfg.launch - len(kept) - errors
        return out.model_copy(update={"final": result.answer}).noted(
            f"first finish: kept {len(kept)} of {cfg.launch}, cancelled {cancelled}"
        )
