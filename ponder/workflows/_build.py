"""From a :class:`WorkflowSpec` to a runnable :class:`Workflow` (a compiled graph).

Everything is checked before any model is called: component names, parameters (against
each component's config class), model references, node references, conditions, and loops
without a bounded exit. Problems are reported together, each with its path in the spec
(``nodes.draft.components[0].n``), which the YAML loader turns into file:line.
"""

from __future__ import annotations

import asyncio
import contextvars
import operator
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from ponder.agents import (
    MCTS,
    AdaptiveVote,
    AdaptiveVoteConfig,
    BeamSearch,
    BeamSearchConfig,
    BestOfN,
    BestOfNConfig,
    Candidate,
    Cascade,
    CascadeConfig,
    ConfidenceVote,
    ConfidenceVoteConfig,
    Critic,
    EarlyRejection,
    EarlyRejectionConfig,
    ExecutionVote,
    ExecutionVoteConfig,
    FirstFinish,
    FirstFinishConfig,
    Fuser,
    FuserConfig,
    Generate,
    GenerateConfig,
    JudgeConfig,
    MCTSConfig,
    ModelVerifier,
    ParticleFilter,
    ParticleFilterConfig,
    Pool,
    ProcessRewardModel,
    Ranker,
    RankerConfig,
    Refine,
    RefineConfig,
    RunTests,
    RunTestsConfig,
    SpeculativeConfig,
    SpeculativeReasoning,
    Spend,
    VerifierConfig,
    Vote,
    VoteConfig,
    WriteTests,
    WriteTestsConfig,
    merge_pools,
    vote,
)
from ponder.backends import Budget, Model, ModelRef, Price, PriceTable
from ponder.errors import ConfigurationError
from ponder.graphs import CompiledGraph, Event, Graph, GraphError, GraphResult
from ponder.settings import Settings
from ponder.workflows._memory import MemoryCurate, MemoryRead, MemoryStepConfig
from ponder.workflows._spec import ComponentSpec, NodeSpec, WorkflowSpec

__all__ = ["COMPONENT_FACTORIES", "Problem", "Workflow", "WorkflowError", "parse_condition"]

Runner = Callable[[Pool], Awaitable[Pool]]


@dataclass(frozen=True)
class Problem:
    """One problem found in a spec: where (a path of keys and indexes, and the line when
    it came from a file) and what."""

    path: tuple[str | int, ...]
    message: str
    line: int | None = None

    def where(self) -> str:
        out = ""
        for p in self.path:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
        return out or "(workflow)"


class WorkflowError(ConfigurationError):
    """A workflow spec is invalid; ``problems`` lists each with its place."""

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        name = source or "workflow"
        lines = [
            f"{name}:{p.line}: {p.where()}: {p.message}"
            if p.line is not None
            else f"{name}: {p.where()}: {p.message}"
            for p in problems
        ]
        super().__init__("\n".join(lines))


# -- components ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Factory:
    config: type[BaseModel]
    needs_model: bool
    build: Callable[[BaseModel, list[Model], Model | None], Any]
    many_models: bool = False


def _prm(ms: list[Model], p: Model | None) -> ProcessRewardModel:
    return ProcessRewardModel(p or ms[0])


COMPONENT_FACTORIES: dict[str, _Factory] = {
    "generate": _Factory(
        GenerateConfig, True, lambda c, ms, _p: Generate(ms, cast(GenerateConfig, c)), True
    ),
    "vote": _Factory(VoteConfig, False, lambda c, _m, _p: Vote(cast(VoteConfig, c))),
    "adaptive_vote": _Factory(
        AdaptiveVoteConfig,
        True,
        lambda c, ms, _p: AdaptiveVote(Generate(ms), cast(AdaptiveVoteConfig, c)),
        True,
    ),
    "verify": _Factory(
        VerifierConfig, True, lambda c, ms, _p: ModelVerifier(ms[0], cast(VerifierConfig, c))
    ),
    "critique": _Factory(JudgeConfig, True, lambda c, ms, _p: Critic(ms[0], cast(JudgeConfig, c))),
    "rank": _Factory(RankerConfig, True, lambda c, ms, _p: Ranker(ms[0], cast(RankerConfig, c))),
    "fuse": _Factory(FuserConfig, True, lambda c, ms, _p: Fuser(ms[0], cast(FuserConfig, c))),
    "best_of_n": _Factory(BestOfNConfig, False, lambda c, _m, _p: BestOfN(cast(BestOfNConfig, c))),
    "refine": _Factory(
        RefineConfig,
        True,
        lambda c, ms, _p: Refine(ms[0], ModelVerifier(ms[0]), config=cast(RefineConfig, c)),
    ),
    "write_tests": _Factory(
        WriteTestsConfig, True, lambda c, ms, _p: WriteTests(ms[0], cast(WriteTestsConfig, c))
    ),
    "run_tests": _Factory(
        RunTestsConfig, False, lambda c, _m, _p: RunTests(cast(RunTestsConfig, c))
    ),
    "execution_vote": _Factory(
        ExecutionVoteConfig, False, lambda c, _m, _p: ExecutionVote(cast(ExecutionVoteConfig, c))
    ),
    "beam_search": _Factory(
        BeamSearchConfig,
        True,
        lambda c, ms, p: BeamSearch(ms[0], _prm(ms, p), cast(BeamSearchConfig, c)),
    ),
    "mcts": _Factory(
        MCTSConfig, True, lambda c, ms, p: MCTS(ms[0], _prm(ms, p), cast(MCTSConfig, c))
    ),
    "particle_filter": _Factory(
        ParticleFilterConfig,
        True,
        lambda c, ms, p: ParticleFilter(ms[0], _prm(ms, p), cast(ParticleFilterConfig, c)),
    ),
    "first_finish": _Factory(
        FirstFinishConfig, True, lambda c, ms, _p: FirstFinish(ms[0], cast(FirstFinishConfig, c))
    ),
    "cascade": _Factory(
        CascadeConfig, True, lambda c, ms, _p: Cascade(ms, cast(CascadeConfig, c)), True
    ),
    "confidence_vote": _Factory(
        ConfidenceVoteConfig, False, lambda c, _m, _p: ConfidenceVote(cast(ConfidenceVoteConfig, c))
    ),
    "early_rejection": _Factory(
        EarlyRejectionConfig,
        True,
        lambda c, ms, p: EarlyRejection(ms[0], _prm(ms, p), cast(EarlyRejectionConfig, c)),
    ),
    "speculative_reasoning": _Factory(
        SpeculativeConfig,
        True,
        lambda c, ms, p: SpeculativeReasoning(
            ms[0], ms[-1], ProcessRewardModel(p or ms[-1]), cast(SpeculativeConfig, c)
        ),
        True,
    ),
    "memory_read": _Factory(
        MemoryStepConfig, True, lambda c, ms, _p: MemoryRead(ms[0], cast(MemoryStepConfig, c))
    ),
    "memory_curate": _Factory(
        MemoryStepConfig, True, lambda c, ms, _p: MemoryCurate(ms[0], cast(MemoryStepConfig, c))
    ),
}


# -- conditions ---------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_CLAUSE = re.compile(
    r"^\s*(?P<metric>[a-z_]+)(?:\((?P<arg>[a-zA-Z0-9_]+)\))?\s*"
    r"(?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+(?:\.\d+)?|true|false)\s*$"
)
_METRICS: dict[str, Callable[[Pool, str | None], float]] = {
    "candidates": lambda p, _a: len(p.candidates),
    "answered": lambda p, _a: sum(c.answer is not None for c in p.candidates),
    "verified": lambda p, _a: sum(
        any(v is True for v in c.verdicts.values()) for c in p.candidates
    ),
    "verified_share": lambda p, _a: (
        sum(any(v is True for v in c.verdicts.values()) for c in p.candidates)
        / max(1, len(p.candidates))
    ),
    "support": lambda p, _a: vote(p.candidates).support,
    "has_final": lambda p, _a: float(p.final is not None),
    "tokens": lambda p, _a: p.spend.total_tokens,
    "cost": lambda p, _a: p.spend.cost,
    "max_score": lambda p, a: max((c.scores.get(a or "", 0.0) for c in p.candidates), default=0),
    "min_score": lambda p, a: min((c.scores.get(a or "", 0.0) for c in p.candidates), default=0),
}


def parse_condition(text: str) -> Callable[[Pool], bool]:
    """``"verified_share >= 0.5 and candidates > 2"`` -> a predicate on a pool."""
    ors = [part for part in re.split(r"\s+or\s+", text.strip()) if part]
    if not ors:
        raise ValueError("empty condition")
    compiled: list[list[tuple[Callable[[Pool, str | None], float], str | None, str, float]]] = []
    for group in ors:
        ands = []
        for clause in re.split(r"\s+and\s+", group):
            m = _CLAUSE.match(clause)
            if m is None:
                raise ValueError(
                    f"cannot read condition {clause!r}: write '<metric> <op> <number>' with a "
                    f"metric among {', '.join(sorted(_METRICS))}"
                )
            metric = m.group("metric")
            if metric not in _METRICS:
                raise ValueError(f"unknown metric {metric!r}; known: {', '.join(sorted(_METRICS))}")
            if metric in ("max_score", "min_score") and not m.group("arg"):
                raise ValueError(f"{metric} needs a score name, e.g. {metric}(verifier)")
            raw = m.group("value")
            value = 1.0 if raw == "true" else 0.0 if raw == "false" else float(raw)
            ands.append((_METRICS[metric], m.group("arg"), m.group("op"), value))
        compiled.append(ands)

    def predicate(pool: Pool) -> bool:
        return any(all(_OPS[op](f(pool, arg), v) for f, arg, op, v in g) for g in compiled)

    return predicate


# -- validation ---------------------------------------------------------------------------


def _pydantic_problems(e: ValidationError, prefix: tuple[str | int, ...]) -> list[Problem]:
    out = []
    for err in e.errors():
        loc = tuple(x for x in err["loc"] if not str(x).startswith("function-"))
        out.append(Problem(prefix + loc, str(err["msg"])))
    return out


def _component_config(
    spec: ComponentSpec, seed: int, system: str | None
) -> tuple[_Factory | None, BaseModel | None, list[Problem]]:
    factory = COMPONENT_FACTORIES.get(spec.component)
    if factory is None:
        known = ", ".join(sorted(COMPONENT_FACTORIES))
        return (
            None,
            None,
            [Problem(("component",), f"unknown component {spec.component!r}; known: {known}")],
        )
    params = dict(spec.params)
    fields = factory.config.model_fields
    if "seed" in fields and "seed" not in params:
        params["seed"] = seed
    if spec.component == "generate" and system is not None and "system" not in params:
        params["system"] = system
    prm = (
        params.pop("prm_model", None)
        if spec.component
        in ("beam_search", "mcts", "particle_filter", "early_rejection", "speculative_reasoning")
        else None
    )
    try:
        config = factory.config.model_validate(params)
    except ValidationError as e:
        return factory, None, _pydantic_problems(e, ())
    if prm is not None and not isinstance(prm, str):
        return factory, None, [Problem(("prm_model",), "must name a model")]
    return factory, config, []


def check(spec: WorkflowSpec) -> list[Problem]:
    """Every problem in ``spec``, with its path; empty when it can run."""
    problems: list[Problem] = []
    for name, m in spec.models.items():
        try:
            ModelRef.parse(m.ref)
        except ConfigurationError as e:
            problems.append(Problem(("models", name), str(e)))
    nodes = spec.node_map()
    base: tuple[str | int, ...] = ("layers",) if spec.layers else ("nodes",)
    for i, (name, node) in enumerate(nodes.items()):
        where: tuple[str | int, ...] = base + ((i,) if spec.layers else (name,))
        for j, comp in enumerate(node.components):
            at = (*where, "components", j) if len(node.components) > 1 or not spec.layers else where
            factory, _, found = _component_config(comp, node.seed or spec.seed, spec.system)
            problems += [Problem(at + p.path, p.message) for p in found]
            if factory is None:
                continue
            refs = ([comp.model] if comp.model else []) + list(comp.models)
            if factory.needs_model and not refs:
                if len(spec.models) == 1:
                    continue  # the only model is implied
                problems.append(Problem((*at, "model"), f"{comp.component} needs a model"))
            if len(refs) > 1 and not factory.many_models:
                problems.append(Problem((*at, "models"), f"{comp.component} takes one model"))
            prm = comp.params.get("prm_model")
            for r in [*refs, *([prm] if isinstance(prm, str) else [])]:
                if r not in spec.models:
                    defined = ", ".join(sorted(spec.models)) or "none"
                    problems.append(
                        Problem((*at, "model"), f"model {r!r} is not defined (defined: {defined})")
                    )
    for k, edge in enumerate(spec.edge_list() if not spec.layers else ()):
        for target in (edge.source, edge.to, edge.otherwise):
            if target is not None and target not in nodes and target.upper() != "END":
                problems.append(Problem(("edges", k), f"node {target!r} is not defined"))
        if edge.when is not None:
            try:
                parse_condition(edge.when)
            except ValueError as e:
                problems.append(Problem(("edges", k, "when"), str(e)))
    if spec.entry is not None and spec.entry not in nodes:
        problems.append(Problem(("entry",), f"node {spec.entry!r} is not defined"))
    if not problems:
        try:
            _graph(spec, {}, dry=True).validate()
        except GraphError as e:
            path: tuple[str | int, ...] = ("nodes", e.node) if e.node else ()
            problems.append(Problem(path, str(e).split(": ", 1)[-1] if e.node else str(e)))
    return problems


# -- building ------------------------------------------------------------------------------


def _card(c: Candidate) -> dict[str, Any]:
    return {
        "id": c.id,
        "answer": c.answer,
        "model": c.provenance.model,
        "scores": c.scores,
        "verdicts": c.verdicts,
        "critiques": [k[:300] for k in c.critiques[:3]],
    }


def _describe(before: Pool, after: Pool) -> dict[str, Any]:
    old = {b.id: b for b in before.candidates}
    new = [c for c in after.candidates if c.id not in old]
    changed = [
        c
        for c in after.candidates
        if c.id in old
        and (c.scores, c.critiques, c.verdicts)
        != (old[c.id].scores, old[c.id].critiques, old[c.id].verdicts)
    ]
    k = len(before.notes)
    notes = after.notes[k:] if after.notes[:k] == before.notes else after.notes
    return {
        "candidates": len(after.candidates),
        "new_candidates": [_card(c) for c in new[:50]],
        "updated_candidates": [_card(c) for c in changed[:50]],
        "notes": list(notes),
        "final": after.final,
        "tokens": after.spend.total_tokens,
        "cost": after.spend.cost,
        "requests": after.spend.requests,
    }


def _node_configs(
    node: NodeSpec, spec: WorkflowSpec, index: int = 0
) -> list[tuple[_Factory, BaseModel]]:
    """Each component's factory and validated config, generators stamped with the node's
    position ``index`` (a pure function of the spec)."""
    out = []
    for comp in node.components:
        factory, config, problems = _component_config(comp, node.seed or spec.seed, spec.system)
        if factory is None or config is None:
            raise WorkflowError(problems)
        if isinstance(config, GenerateConfig):
            config = config.model_copy(update={"layer": index})
        out.append((factory, config))
    return out


def _runner(
    name: str,
    node: NodeSpec,
    spec: WorkflowSpec,
    models: dict[str, Model],
    index: int = 0,
    configs: list[tuple[_Factory, BaseModel]] | None = None,
) -> Runner:
    built: list[Any] = []
    default = next(iter(models.values()), None)
    made = configs if configs is not None else _node_configs(node, spec, index)
    for comp, (factory, config) in zip(node.components, made, strict=True):
        refs = ([comp.model] if comp.model else []) + list(comp.models)
        ms = [models[r] for r in refs] if refs else ([default] if default is not None else [])
        prm_name = comp.params.get("prm_model")
        prm = models[prm_name] if isinstance(prm_name, str) else None
        built.append(factory.build(config, ms, prm))

    visit = [0]

    async def run(pool: Pool) -> Pool:
        visit[0] += 1
        if len(built) == 1:  # the common case: one component, no list, no merge
            comp = built[0]
            key = f"{name}#{visit[0]}.0"
            if hasattr(comp, "step_key"):  # it enters its spend in the ledger itself
                comp.step_key = key
            out: Pool = await comp(pool)
            if key in out.ledger:
                return out
            return out.model_copy(update={"ledger": {**out.ledger, key: out.spend - pool.spend}})
        outs = list(await asyncio.gather(*(c(pool) for c in built)))
        for i, o in enumerate(outs):
            delta = o.spend - pool.spend
            key = f"{name}#{visit[0]}.{i}"
            outs[i] = o.model_copy(update={"ledger": {**o.ledger, key: delta}})
        return merge_pools(outs)

    return run


_RUNNERS: contextvars.ContextVar[dict[str, Runner]] = contextvars.ContextVar("ponder_runners")


class _Dispatch:
    """A node's step in the compiled graph: runs this run's component instance (the graph is
    compiled once per workflow; models and components are made per run)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, pool: Pool) -> Awaitable[Pool]:
        return _RUNNERS.get()[self.name](pool)  # the runner's awaitable: no frame of its own


def _graph(spec: WorkflowSpec, models: dict[str, Model], *, dry: bool = False) -> Graph[Pool]:
    graph: Graph[Pool] = Graph(Pool, merge=merge_pools, describe=_describe)
    nodes = spec.node_map()
    order = list(nodes)
    if spec.entry is not None:
        order.remove(spec.entry)
        order.insert(0, spec.entry)

    async def noop(pool: Pool) -> Pool:
        return pool

    for name in order:
        fn: Runner = noop if dry else _Dispatch(name)
        graph.add_node(name, fn, approve=nodes[name].approve)
    for e in spec.edge_list():
        if e.when is None:
            graph.add_edge(e.source, e.to)
        else:
            graph.add_branch(
                e.source,
                parse_condition(e.when),
                e.to,
                e.otherwise or "END",
                max_iterations=e.max_iterations,
                label=e.when,
            )
    return graph


class Workflow:
    """A validated workflow: ``await wf.arun("question")``, ``wf.run(...)``,
    ``async for event in wf.astream(...)``.

    Models are opened for a run and closed after it (``models`` passes ready Model objects,
    e.g. fakes, for names of the spec; the caller keeps those open). With ``checkpoint``
    and a ``thread_id``, an interrupted run resumes where it stopped; with the response
    cache on, no completed model call is paid twice.
    """

    def __init__(
        self,
        spec: WorkflowSpec,
        *,
        settings: Settings | None = None,
        checkpoint: str | Path | None = None,
        source: str | None = None,
        models: dict[str, Model] | None = None,
    ) -> None:
        problems = check(spec)
        if problems:
            raise WorkflowError(problems, source=source)
        unknown = sorted(set(models or {}) - set(spec.models))
        if unknown:
            raise WorkflowError(
                [
                    Problem(("models", u), "given as an object but not named in the spec")
                    for u in unknown
                ],
                source=source,
            )
        self.spec = spec
        self.settings = settings
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.given_models = dict(models or {})
        self._base: CompiledGraph[Pool] | None = None
        # each node's spec and validated component configs, made once per workflow
        self._nodes: dict[str, tuple[NodeSpec, list[tuple[_Factory, BaseModel]]]] | None = None

    def _models(self, budget: Budget | None) -> dict[str, Model]:
        out = dict(self.given_models)
        for name, m in self.spec.models.items():
            if name in out:
                continue
            ref = ModelRef.parse(m.ref)
            limit = m.max_concurrency or self.spec.concurrency
            if limit is not None:
                ref = ref.model_copy(update={"max_concurrency": limit})
            model = Model(ref, settings=self.settings, budget=budget)
            if m.price is not None:
                model.prices = PriceTable({model.id: Price(*m.price)})
            out[name] = model
        return out

    def _budget(self) -> Budget | None:
        b = self.spec.budget
        if b is None:
            return None
        return Budget(max_cost=b.max_cost, max_tokens=b.max_tokens, max_requests=b.max_requests)

    async def _compiled(self, stack: AsyncExitStack) -> CompiledGraph[Pool]:
        """This run's graph; the caller must run it in the current context (the node
        steps find this run's components through a context variable)."""
        models = self._models(self._budget())
        for name, m in models.items():
            if name not in self.given_models:  # the caller owns the models it passed in
                await stack.enter_async_context(m)
        if self._nodes is None:  # validated once per workflow, components made per run
            self._nodes = {
                n: (node, _node_configs(node, self.spec, i))
                for i, (n, node) in enumerate(self.spec.node_map().items())
            }
        _RUNNERS.set(
            {
                n: _runner(n, node, self.spec, models, configs=configs)
                for n, (node, configs) in self._nodes.items()
            }
        )
        if self._base is None:  # compiling is the slow part: once per workflow
            probe: Any = None
            if self.checkpoint is not None:
                from langgraph.checkpoint.memory import InMemorySaver

                probe = InMemorySaver()  # stores JSON outputs, like the real one
            self._base = _graph(self.spec, {}).compile(probe)
        if self.checkpoint is None:
            return self._base
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpointer = await stack.enter_async_context(
            AsyncSqliteSaver.from_conn_string(str(self.checkpoint))
        )
        return self._base.with_checkpointer(checkpointer)

    def _pool(self, question: str | Pool | None) -> Pool | None:
        if question is None or isinstance(question, Pool):
            return question
        return Pool(query=question, system=None)

    async def arun(
        self, question: str | Pool | None, *, thread_id: str | None = None
    ) -> GraphResult[Pool]:
        """Run on ``question`` (or resume ``thread_id`` when ``question`` is None or the
        thread has a checkpoint)."""
        async with AsyncExitStack() as stack:
            graph = await self._compiled(stack)
            return await graph.arun(self._pool(question), thread_id=thread_id)

    def run(
        self, question: str | Pool | None, *, thread_id: str | None = None
    ) -> GraphResult[Pool]:
        """Synchronous :meth:`arun`."""
        return asyncio.run(self.arun(question, thread_id=thread_id))

    async def astream(
        self, question: str | Pool | None, *, thread_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """Events as they happen: node started/finished/failed (with candidates, final
        answer, tokens and cost so far), then ``run_finished``."""
        async with AsyncExitStack() as stack:
            graph = await self._compiled(stack)
            events = graph.astream(self._pool(question), thread_id=thread_id)
            async with aclosing(events):
                async for e in events:
                    yield e

    async def aevents(
        self, question: str | Pool | None, *, thread_id: str | None = None
    ) -> AsyncGenerator[tuple[Event, GraphResult[Pool] | None], None]:
        """Events as they happen, each paired with the result (set on ``run_finished``)."""
        async with AsyncExitStack() as stack:
            graph = await self._compiled(stack)
            pairs = graph.aevents(self._pool(question), thread_id=thread_id)
            async with aclosing(pairs):
                async for pair in pairs:
                    yield pair

    @staticmethod
    def total_spend(result: GraphResult[Pool]) -> Spend:
        return result.output.spend
