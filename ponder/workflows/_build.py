"""From a :class:`WorkflowSpec` to a runnable :class:`Workflow` (a compiled graph).

Everything is checked before any model is called: component names, parameters (against
each component's config class), model references, node references, conditions, and loops
without a bounded exit. Problems are reported together, each with its path in the spec
(``nodes.draft.components[0].n``), which the YAML loader turns into file:line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ponder import tracing
from ponder._internal import loop
from ponder.agents import (
    Candidate,
    ComponentInfo,
    Pool,
    Spend,
    merge_pools,
)
from ponder.agents._base import LIVE_TEXT
from ponder.backends import Budget, Model
from ponder.backends._scope import BudgetLike, current_scope
from ponder.engine import Engine, engine_for
from ponder.graphs import CompiledGraph, Event, GraphResult
from ponder.settings import Settings
from ponder.workflows import _memory  # noqa: F401  (registers memory_read, memory_curate)
from ponder.workflows._check import (
    Problem,
    Runner,
    WorkflowError,
    _component_config,
    _graph,
    check,
    parse_condition,
)
from ponder.workflows._spec import NodeSpec, WorkflowSpec

__all__ = ["Problem", "Workflow", "WorkflowError", "parse_condition"]


# -- building ------------------------------------------------------------------------------


def _card(c: Candidate) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": c.id,
        "answer": c.answer,
        "model": c.provenance.model,
        "scores": c.scores,
        "verdicts": c.verdicts,
        "critiques": [k[:300] for k in c.critiques[:3]],
    }
    if c.trajectory:  # an agent's tool calls, in order, with what came back
        card["tools"] = [
            {
                "name": u.name,
                "arguments": u.arguments[:300],
                "result": u.result[:300],
                "error": u.error,
            }
            for step in c.trajectory
            for u in step.tool_uses
        ][:20]
        card["stopped"] = c.finish_reason
    return card


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
    step = after.spend - before.spend
    vote = after.vote
    return {
        "step_tokens": step.total_tokens,
        "step_cached_tokens": step.cached_tokens,
        "step_cost": step.cost,
        "vote": (
            {
                "answer": vote.answer,
                "tally": vote.tally,
                "support": vote.support,
                "counted": vote.counted,
                "abstained": vote.abstained,
            }
            if vote is not None and vote is not before.vote
            else None
        ),
        "candidates": len(after.candidates),
        "new_candidates": [_card(c) for c in new[:50]],
        "updated_candidates": [_card(c) for c in changed[:50]],
        "notes": list(notes),
        "final": after.final,
        "tokens": after.spend.total_tokens,
        "cached_tokens": after.spend.cached_tokens,
        "saved_cost": after.spend.saved_cost,
        "cost": after.spend.cost,
        "requests": after.spend.requests,
    }


def _node_configs(
    name: str, node: NodeSpec, spec: WorkflowSpec, index: int = 0
) -> list[tuple[ComponentInfo, BaseModel]]:
    """Each component's registry entry and validated config, stamped with its slot (the
    node's name and the component's position) and generators with the node's position
    ``index`` (a pure function of the spec)."""
    out = []
    for j, comp in enumerate(node.components):
        info, config, problems = _component_config(comp, node.seed or spec.seed, spec.system)
        if info is None or config is None:
            raise WorkflowError(problems)
        update: dict[str, Any] = {}
        if "slot" in type(config).model_fields:
            update["slot"] = f"{name}.{j}"
        if "layer" in type(config).model_fields and comp.component == "generate":
            update["layer"] = index
        if update:
            config = config.model_copy(update=update)
        out.append((info, config))
    return out


def _next_visit(ledger: dict[str, Spend], name: str) -> int:
    """This node's visit number, read from the ledger the pool carries (a node in a loop
    sees its earlier visits there): no counter is kept between calls. A dict look-up per
    earlier visit, not a scan of the ledger."""
    visit = 1
    while f"{name}#{visit}.0" in ledger:
        visit += 1
    return visit


def _pool_attributes(out: Pool, before: Pool, detail: bool = True) -> dict[str, Any]:
    """What a step did, as span attributes: the candidates it added (ids, answers), the
    scores and verdicts it set or changed, the final answer, the vote and its spend. Only
    what changed is listed, so a long chain costs the same per step."""
    spent = out.spend - before.spend
    attrs: dict[str, Any] = {
        "ponder.candidates": len(out.candidates),
        "ponder.final": out.final,
        "ponder.tokens": spent.prompt_tokens + spent.completion_tokens,
        "ponder.cached_tokens": spent.cached_tokens,
        "ponder.saved_cost": spent.saved_cost,
        "ponder.cost": spent.cost,
        "ponder.requests": spent.requests,
    }
    if not detail:
        return attrs
    prior, now = before.candidates, out.candidates
    k = len(prior)
    if len(now) >= k and all(a is b for a, b in zip(prior, now, strict=False)):
        # the common case (a generator appended): only the new candidates are looked at
        added, changed = list(now[k:]), list(now[k:])
        old: dict[str, Candidate] = {}
    else:
        old = {c.id: c for c in prior}
        added = [c for c in now if c.id not in old]
        changed = list(now)
    judged = {}
    for c in changed:
        was = old.get(c.id)
        if (c.scores or c.verdicts) and (
            was is None or was.scores != c.scores or was.verdicts != c.verdicts
        ):
            judged[c.id] = {"scores": c.scores, "verdicts": c.verdicts}
    attrs["ponder.candidate_ids"] = [c.id for c in added] or None
    attrs["ponder.answers"] = [c.answer or "" for c in added] or None
    attrs["ponder.judged"] = judged or None
    attrs["ponder.vote"] = (
        out.vote.model_dump() if out.vote is not None and out.vote is not before.vote else None
    )
    return attrs


def _budget_left(budgets: Sequence[BudgetLike]) -> dict[str, Any]:
    """What the run's in-process budgets have left (the tightest of each limit), as span
    attributes (a Redis budget is shared across processes: not read here)."""
    left: dict[str, Any] = {}
    for b in budgets:
        if not isinstance(b, Budget):
            continue
        s = b.spent
        for key, cap, used in (
            ("ponder.budget.tokens_left", b.max_tokens, s.usage.total_tokens),
            ("ponder.budget.cost_left", b.max_cost, s.cost),
            ("ponder.budget.requests_left", b.max_requests, s.requests),
        ):
            if cap is not None:
                rest = max(cap - used, 0)
                left[key] = min(rest, left.get(key, rest))
    return left


def _component_attributes(c: Any) -> dict[str, Any]:
    config = getattr(c, "config", None)
    return {"openinference.span.kind": "CHAIN",
            "ponder.component": getattr(c, "name", type(c).__name__),
            "ponder.slot": getattr(config, "slot", None)}  # fmt: skip


class _Node:
    """A node's step: its components (built once per workflow and engine, stateless), run
    in parallel on the same pool and merged; each component's spend entered in the
    ledger under ``node#visit.position``."""

    def __init__(self, name: str, built: list[Any], final: bool = False) -> None:
        self.name = name
        self.built = built
        self.final = final  # the last step of a layer stack: it may write a live answer

    async def __call__(self, pool: Pool) -> Pool:
        scope = current_scope()  # the run's live sink, for its answer-writing step only
        sink = scope.live if scope is not None else None
        live = sink is not None and self.final and len(self.built) == 1
        token = LIVE_TEXT.set(sink if live else None)
        try:
            if tracing.enabled():
                return await self._traced(pool)
            return await self._run(pool)
        finally:
            LIVE_TEXT.reset(token)

    async def _traced(self, pool: Pool) -> Pool:
        """The node as a span; a node of several components has a child span for each
        (one component: its attributes are on the node's span, one span fewer)."""
        visit = _next_visit(pool.ledger, self.name) if pool.ledger else 1
        attrs: dict[str, Any] = {"openinference.span.kind": "CHAIN",
                                 "ponder.node": self.name, "ponder.visit": visit,
                                 "ponder.candidates_in": len(pool.candidates)}  # fmt: skip
        single = len(self.built) == 1
        if single:
            attrs.update(_component_attributes(self.built[0]))
        with tracing.span(f"ponder.node {self.name}", attrs) as s:
            out = await self._run(pool, traced=not single)
            tracing.set_attributes(s, _pool_attributes(out, pool, detail=single))
            return out

    async def _component(self, c: Any, pool: Pool, traced: bool) -> Pool:
        if not traced:
            out: Pool = await c(pool)
            return out
        attrs = _component_attributes(c)
        with tracing.span(f"ponder.component {attrs['ponder.component']}", attrs) as s:
            out = await c(pool)
            tracing.set_attributes(s, _pool_attributes(out, pool))
            return out

    async def _run(self, pool: Pool, traced: bool = False) -> Pool:
        visit = _next_visit(pool.ledger, self.name) if pool.ledger else 1
        if len(self.built) == 1:  # the common case: one component, no list, no merge
            out = await self._component(self.built[0], pool, traced)
            key = f"{self.name}#{visit}.0"
            return out.model_copy(update={"ledger": {**out.ledger, key: out.spend - pool.spend}})
        outs = list(await asyncio.gather(*(self._component(c, pool, traced) for c in self.built)))
        for i, o in enumerate(outs):
            key = f"{self.name}#{visit}.{i}"
            outs[i] = o.model_copy(update={"ledger": {**o.ledger, key: o.spend - pool.spend}})
        return merge_pools(outs)


@dataclass
class _Bound:
    """A workflow bound to one engine: its models, components and compiled graph, made
    once and shared by every run on that engine."""

    engine: Engine
    models: dict[str, Model]
    graph: CompiledGraph[Pool]


class Workflow:
    """A validated workflow: ``await wf.arun("question")``, ``wf.run(...)``,
    ``async for event in wf.astream(...)``.

    Its models come from an engine (``engine=``, else the running loop's engine for
    ``settings``), and its components and compiled graph are made once per engine and
    serve every run, concurrent ones included: a run owns only its budget, ledger and
    events. ``models`` passes ready Model objects (e.g. fakes) for names of the spec; the
    caller keeps those open. With ``checkpoint`` and a ``thread_id``, an interrupted run
    resumes where it stopped; with the response cache on, no completed model call is paid
    twice.
    """

    def __init__(
        self,
        spec: WorkflowSpec,
        *,
        settings: Settings | None = None,
        checkpoint: str | Path | None = None,
        source: str | None = None,
        models: dict[str, Model] | None = None,
        engine: Engine | None = None,
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
        self.settings = (
            settings if settings is not None else (engine.settings if engine is not None else None)
        )
        self.engine = engine
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.given_models = dict(models or {})
        # each node's validated component configs, made once per workflow
        self._configs = {
            n: _node_configs(n, node, spec, i)
            for i, (n, node) in enumerate(spec.node_map().items())
        }
        self._bound: _Bound | None = None
        self._loop_engine: tuple[asyncio.AbstractEventLoop, Engine] | None = None

    def _engine(self) -> Engine:
        if self.engine is not None:
            return self.engine
        loop = asyncio.get_running_loop()
        found = self._loop_engine
        if found is not None and found[0] is loop and not found[1]._closed:
            return found[1]  # this loop's engine, looked up once
        engine = engine_for(self.settings)
        self._loop_engine = (loop, engine)
        return engine

    def models(self, engine: Engine | None = None) -> dict[str, Model]:
        """The spec's models as the engine serves them (priced as the spec says)."""
        engine = engine or self._engine()
        out = dict(self.given_models)
        for name, m in self.spec.models.items():
            if name in out:
                continue
            limit = m.max_concurrency or self.spec.concurrency
            out[name] = engine.model(m.model_ref, max_concurrency=limit, price=m.price)
        return out

    def _bind(self, engine: Engine) -> _Bound:
        bound = self._bound
        if bound is not None and bound.engine is engine and not engine._closed:
            return bound
        models = self.models(engine)
        default = next(iter(models.values()), None)
        uses: dict[str, int] = {}  # model name -> slots that sampled from it so far

        def slot_model(name: str) -> Model:
            k = uses.get(name, 0)
            uses[name] = k + 1
            return models[name].for_slot(k)  # the k-th slot of one model: its own samples

        steps: dict[str, Runner] = {}
        # a layer stack's last layer writes the answer (a live answer streams from it)
        last = list(self.spec.node_map())[-1] if self.spec.layers else None
        for n, node in self.spec.node_map().items():
            built: list[Any] = []
            for comp, (info, config) in zip(node.components, self._configs[n], strict=True):
                refs = ([comp.model] if comp.model else []) + list(comp.models)
                if not refs and default is not None and info.needs_model:
                    refs = [next(iter(models))]
                ms = [slot_model(r) for r in refs] if info.needs_model else []
                prm_name = comp.params.get("prm_model")
                prm = models[prm_name] if isinstance(prm_name, str) else None
                if info.with_engine:  # it builds what its config names through the engine
                    built.append(info.build(config, ms, prm, engine))  # type: ignore[call-arg]
                else:
                    built.append(info.build(config, ms, prm))  # type: ignore[call-arg]
            steps[n] = _Node(n, built, final=n == last)
        graph = _graph(self.spec, steps, _describe)
        probe: Any = None
        if self.checkpoint is not None:
            from langgraph.checkpoint.memory import InMemorySaver

            probe = InMemorySaver()  # stores JSON outputs, like the real one
        bound = _Bound(engine, models, graph.compile(probe))
        self._bound = bound
        return bound

    async def _compiled(self, stack: AsyncExitStack, engine: Engine) -> CompiledGraph[Pool]:
        """This workflow's graph on ``engine`` (with this run's checkpointer)."""
        base = self._bind(engine).graph
        if self.checkpoint is None:
            return base
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpointer = await stack.enter_async_context(
            AsyncSqliteSaver.from_conn_string(str(self.checkpoint))
        )
        return base.with_checkpointer(checkpointer)

    def _budget(self) -> Budget | None:
        b = self.spec.budget
        if b is None:
            return None
        return Budget(max_cost=b.max_cost, max_tokens=b.max_tokens, max_requests=b.max_requests)

    def _pool(self, question: str | Pool | None) -> Pool | None:
        if question is None or isinstance(question, Pool):
            return question
        return Pool(query=question, system=None)

    async def arun(
        self,
        question: str | Pool | None,
        *,
        thread_id: str | None = None,
        budgets: Sequence[BudgetLike] = (),
        on_event: Callable[[Event], object] | None = None,
        progress: bool = False,
    ) -> GraphResult[Pool]:
        """Run on ``question`` (or resume ``thread_id`` when ``question`` is None or the
        thread has a checkpoint). ``budgets`` are shared limits this run also spends from
        (e.g. a server's per-key budget), besides the spec's per-run budget.

        ``on_event`` is called with each :class:`ponder.graphs.Event` as it happens (node
        started, finished or failed, with candidates, tokens and cost so far);
        ``progress=True`` shows a live table of the nodes (a terminal or a notebook)."""
        if on_event is not None or progress:
            return await self._watched(question, thread_id, budgets, on_event, progress)
        async with AsyncExitStack() as stack:
            engine = self._engine()
            graph = await self._compiled(stack, engine)
            with (
                engine.run(self._budget(), *budgets, name=self.spec.name) as run,
                tracing.span(f"ponder.run {self.spec.name or 'workflow'}", self._run_attrs(
                    question, thread_id)) as s,
            ):  # fmt: skip
                result = await graph.arun(self._pool(question), thread_id=thread_id)
                if s is not None:
                    s.set_attributes({**self._result_attrs(result), **_budget_left(run.budgets)})
                return result

    def _run_attrs(self, question: str | Pool | None, thread_id: str | None) -> dict[str, Any]:
        return {"openinference.span.kind": "CHAIN",  # how Phoenix and Arize group spans
                "ponder.workflow": self.spec.name or "workflow", "ponder.thread": thread_id,
                "ponder.question": (question.query if isinstance(question, Pool) else question)
                if tracing.capture_content() else None}  # fmt: skip

    @staticmethod
    def _result_attrs(result: GraphResult[Pool]) -> dict[str, Any]:
        out = result.output
        return {
            "ponder.final": out.final,
            "ponder.tokens": out.spend.prompt_tokens + out.spend.completion_tokens,
            "ponder.cached_tokens": out.spend.cached_tokens,
            "ponder.saved_cost": out.spend.saved_cost,
            "ponder.cost": out.spend.cost,
            "ponder.requests": out.spend.requests,
            "ponder.failures": sorted(result.failures) or None,
        }

    async def _watched(
        self,
        question: str | Pool | None,
        thread_id: str | None,
        budgets: Sequence[BudgetLike],
        on_event: Callable[[Event], object] | None,
        progress: bool,
    ) -> GraphResult[Pool]:
        from rich.live import Live

        from ponder.workflows._progress import RunProgress

        view = RunProgress(self.spec.name or "workflow")
        result: GraphResult[Pool] | None = None
        live = Live(view.table(), refresh_per_second=8) if progress else None
        with live if live is not None else contextlib.nullcontext():
            events = self.aevents(question, thread_id=thread_id, budgets=budgets)
            async with aclosing(events):
                async for e, res in events:
                    if on_event is not None:
                        on_event(e)
                    if live is not None:
                        view.update(e)
                        live.update(view.table())
                    result = res or result
        assert result is not None  # the last event is run_finished, with the result
        return result

    def run(
        self,
        question: str | Pool | None,
        *,
        thread_id: str | None = None,
        on_event: Callable[[Event], object] | None = None,
        progress: bool = False,
    ) -> GraphResult[Pool]:
        """Synchronous :meth:`arun`; it also works inside a running event loop (a Jupyter
        cell), where it runs the workflow on a fresh loop in a worker thread (``on_event``
        is then called on that thread)."""
        return loop.run_blocking(
            lambda: self.arun(question, thread_id=thread_id, on_event=on_event, progress=progress)
        )

    async def astream(
        self,
        question: str | Pool | None,
        *,
        thread_id: str | None = None,
        budgets: Sequence[BudgetLike] = (),
    ) -> AsyncGenerator[Event, None]:
        """Events as they happen: node started/finished/failed (with candidates, final
        answer, tokens and cost so far), then ``run_finished``."""
        async with aclosing(self.aevents(question, thread_id=thread_id, budgets=budgets)) as ev:
            async for e, _ in ev:
                yield e

    async def aevents(
        self,
        question: str | Pool | None,
        *,
        thread_id: str | None = None,
        budgets: Sequence[BudgetLike] = (),
        live: bool = False,
    ) -> AsyncGenerator[tuple[Event, GraphResult[Pool] | None], None]:
        """Events as they happen, each paired with the result (set on ``run_finished``).

        With ``live=True``, the last step of a layer stack, when it writes one answer (a
        one-sample ``fuse`` or ``generate``), streams it: ``token`` events (``data.text``)
        arrive as the model writes, between that node's ``node_started`` and
        ``node_finished``."""
        if not live:
            async with aclosing(self._events(question, thread_id, budgets)) as pairs:
                async for pair in pairs:
                    yield pair
            return
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        final = list(self.spec.node_map())[-1] if self.spec.layers else None

        def sink(text: str) -> None:
            queue.put_nowait(("token", text))

        async def pump() -> None:
            try:
                events = self._events(question, thread_id, budgets, live=sink)
                async with aclosing(events) as pairs:
                    async for pair in pairs:
                        queue.put_nowait(("pair", pair))
            except BaseException as e:  # handed to the consumer, which raises it
                queue.put_nowait(("error", e))
            else:
                queue.put_nowait(("end", None))

        task = asyncio.create_task(pump())
        try:
            while True:
                kind, item = await queue.get()
                if kind == "pair":
                    yield item
                elif kind == "token":
                    yield Event(kind="token", node=final, data={"text": item}), None
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _events(
        self,
        question: str | Pool | None,
        thread_id: str | None,
        budgets: Sequence[BudgetLike],
        live: Callable[[str], object] | None = None,
    ) -> AsyncGenerator[tuple[Event, GraphResult[Pool] | None], None]:
        async with AsyncExitStack() as stack:
            engine = self._engine()
            graph = await self._compiled(stack, engine)
            run = engine.run(self._budget(), *budgets, name=self.spec.name, live=live)
            with run:  # the graph's tasks start inside the run: they inherit its scope
                pairs = graph.aevents(self._pool(question), thread_id=thread_id)
            name = f"ponder.run {self.spec.name or 'workflow'}"
            span = tracing.start(name, self._run_attrs(question, thread_id))
            try:
                async with aclosing(pairs):
                    while True:
                        try:
                            with run, tracing.attached(span):
                                pair = await anext(pairs)
                        except StopAsyncIteration:
                            break
                        if pair[1] is not None and span is not None:
                            span.set_attributes(
                                {**self._result_attrs(pair[1]), **_budget_left(run.budgets)}
                            )
                        yield pair
            finally:
                if span is not None:
                    span.end()

    @staticmethod
    def total_spend(result: GraphResult[Pool]) -> Spend:
        return result.output.spend
