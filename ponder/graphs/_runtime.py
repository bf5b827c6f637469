"""A graph of async steps over one pydantic state type, run by LangGraph.

``Graph(State, merge=...)`` collects nodes (``async fn(state) -> state``), edges and
branches; ``compile()`` validates it (unknown nodes, unreachable nodes, a cycle with no
bounded exit) and builds a LangGraph ``StateGraph``. The compiled graph runs with
``arun``/``run`` or streams typed :class:`Event` s with ``astream``; with a checkpointer
and a ``thread_id`` an interrupted run resumes where it stopped.

Each node's output is kept under its name; a node's input is its entry value, or the
fresh output of its predecessor, or the ``merge`` of several predecessors that ran in
the same step (parallel branches). Per-sample fan-out belongs inside a node (a task
group): LangGraph's ``Send`` costs ~0.3 ms per branch and waits for the slowest sibling.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypedDict, TypeVar

from pydantic import BaseModel

from ponder.errors import ConfigurationError, PonderError
from ponder.graphs._results import Event, GraphError, GraphResult

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph import StateGraph

__all__ = ["CompiledGraph", "Event", "Graph", "GraphError", "GraphResult"]

# LangGraph's names for the graph's two ends (langgraph.graph.START and END; a test pins
# them). LangGraph itself loads only when a graph is compiled, so building and validating
# a graph (ponder validate) does not pay for importing it.
START = "__start__"
END = "__end__"

S = TypeVar("S", bound=BaseModel)
NodeFn = Callable[[S], Awaitable[S]]


def _end(name: str) -> str:
    return END if name in ("END", "end", END) else name


def _merge_dicts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {**a, **b}


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _merge_meta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Bookkeeping of a run: ``step`` (supersteps so far), ``visits`` per node, ``stamps``
    (the step a node last produced), ``consumed`` (the newest stamp a node read),
    ``failures`` (node -> reason)."""
    # the maps are never changed in place, so one that ``b`` leaves alone is shared
    out = dict(a)
    out["step"] = a.get("step", 0) + b.get("step", 0)
    visits = b.get("visits")
    if visits:
        out["visits"] = _add_counts(a.get("visits", {}), visits)
    for key in ("stamps", "consumed", "failures"):
        new = b.get(key)
        if new:
            old = a.get(key)
            out[key] = {**old, **new} if old else dict(new)
    return out


EventKind = Literal["node_started", "node_finished", "node_failed", "info", "run_finished"]


def _event(kind: EventKind, node: str, iteration: int, data: dict[str, Any]) -> Event:
    return Event.model_construct(kind=kind, node=node, iteration=iteration, data=data)


class _State(TypedDict, total=False):
    input: dict[str, Any]
    outputs: Annotated[dict[str, Any], _merge_dicts]  # node -> its output (or None: failed)
    meta: Annotated[dict[str, Any], _merge_meta]


@dataclass
class _Branch(Generic[S]):
    source: str
    condition: Callable[[S], bool]
    then: str
    otherwise: str
    max_iterations: int | None
    label: str


@dataclass
class Graph(Generic[S]):
    """A graph under construction. ``merge`` combines states of parallel branches;
    ``describe`` turns a node's output into event data (sizes, spend, ...)."""

    state_type: type[S]
    merge: Callable[[Sequence[S]], S]
    describe: Callable[[S, S], dict[str, Any]] | None = None
    nodes: dict[str, NodeFn[S]] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    branches: list[_Branch[S]] = field(default_factory=list)
    entry: str | None = None
    approve: set[str] = field(default_factory=set)
    raises: set[str] = field(default_factory=set)

    def add_node(
        self,
        name: str,
        fn: NodeFn[S],
        *,
        approve: bool = False,
        on_error: Literal["record", "raise"] = "record",
    ) -> Graph[S]:
        """Add a node. ``on_error`` chooses what a :class:`~ponder.errors.PonderError` in
        it does: ``record`` notes the failure (``GraphResult.failures``, a ``node_failed``
        event) and the graph goes on without that node's output; ``raise`` ends the run
        with it. Any other exception is a bug and always propagates."""
        if name in self.nodes:
            raise GraphError("defined twice", node=name)
        if name in (START, END) or not name:
            raise GraphError("is a reserved name", node=name)
        if on_error not in ("record", "raise"):
            raise GraphError(f"on_error must be 'record' or 'raise', got {on_error!r}", node=name)
        self.nodes[name] = fn
        if on_error == "raise":
            self.raises.add(name)
        if approve:
            self.approve.add(name)
        if self.entry is None:
            self.entry = name
        return self

    def add_edge(self, source: str, target: str) -> Graph[S]:
        self.edges.append((source, _end(target)))
        return self

    def add_branch(
        self,
        source: str,
        condition: Callable[[S], bool],
        then: str,
        otherwise: str,
        *,
        max_iterations: int | None = None,
        label: str = "",
    ) -> Graph[S]:
        """After ``source``: go to ``then`` if ``condition(output)`` else ``otherwise``.

        ``max_iterations`` bounds how often ``then`` may run; past it, ``otherwise``.
        Use ``"END"`` as a target to finish.
        """
        self.branches.append(
            _Branch(source, condition, _end(then), _end(otherwise), max_iterations, label)
        )
        return self

    # -- validation --------------------------------------------------------------------------

    def _successors(self) -> dict[str, list[str]]:
        succ: dict[str, list[str]] = {n: [] for n in self.nodes}
        for a, b in self.edges:
            succ.setdefault(a, []).append(b)
        for br in self.branches:
            succ.setdefault(br.source, []).extend([br.then, br.otherwise])
        return succ

    def validate(self) -> None:
        """Raise :class:`GraphError` naming the node, before anything runs."""
        if not self.nodes:
            raise GraphError("the graph has no nodes")
        known = set(self.nodes) | {END}
        for a, b in self.edges:
            for n in (a, b):
                if n not in known:
                    raise GraphError(f"an edge refers to undefined node {n!r}", node=a)
        for br in self.branches:
            for n in (br.source, br.then, br.otherwise):
                if n not in known:
                    raise GraphError(f"a branch refers to undefined node {n!r}", node=br.source)
            if br.max_iterations is not None and br.max_iterations < 1:
                raise GraphError("max_iterations must be >= 1", node=br.source)
        sources = [br.source for br in self.branches]
        if len(sources) != len(set(sources)):
            raise GraphError("a node may have one branch", node=sources[0])
        for br in self.branches:
            if any(a == br.source for a, _ in self.edges):
                raise GraphError("has both edges and a branch; use one", node=br.source)
        succ = self._successors()
        assert self.entry is not None
        seen = {self.entry}
        todo = [self.entry]
        while todo:
            for nxt in succ.get(todo.pop(), []):
                if nxt != END and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        unreachable = sorted(set(self.nodes) - seen)
        if unreachable:
            raise GraphError("cannot be reached from the entry node", node=unreachable[0])
        self._check_cycles(succ)

    def _check_cycles(self, succ: dict[str, list[str]]) -> None:
        """Every cycle needs a branch with ``max_iterations`` whose ``then`` is in it."""
        bounded = {(br.source, br.then) for br in self.branches if br.max_iterations}
        graph = {
            n: [m for m in succ.get(n, []) if m != END and (n, m) not in bounded]
            for n in self.nodes
        }
        state: dict[str, int] = {}

        def visit(n: str, path: list[str]) -> None:
            state[n] = 1
            for m in graph[n]:
                if state.get(m) == 1:
                    cycle = [*path[path.index(m) :], m] if m in path else [n, m]
                    raise GraphError(
                        "is in a loop with no bounded exit ("
                        + " -> ".join(cycle)
                        + "); give the branch that loops back a max_iterations",
                        node=m,
                    )
                if state.get(m) is None:
                    visit(m, [*path, m])
            state[n] = 2

        for n in self.nodes:
            if n not in state:
                visit(n, [n])

    # -- compilation ------------------------------------------------------------------------

    def compile(self, checkpointer: BaseCheckpointSaver[Any] | None = None) -> CompiledGraph[S]:
        self.validate()
        assert self.entry is not None
        preds: dict[str, list[str]] = {n: [] for n in self.nodes}
        for a, b in self.edges:
            if b != END:
                preds[b].append(a)
        for br in self.branches:
            for t in (br.then, br.otherwise):
                if t != END and br.source not in preds[t]:
                    preds[t].append(br.source)
        succ = self._successors()
        from langgraph.graph import StateGraph

        builder: StateGraph[Any] = StateGraph(_State)
        runners: dict[str, _NodeRunner[S]] = {}
        for name, fn in self.nodes.items():
            # a callable object, not a closure: LangGraph introspects closures (ms each)
            node = runners[name] = self._node(name, fn, preds[name], keep=checkpointer is None)
            builder.add_node(name, node)
        builder.add_edge(START, self.entry)
        for a, b in self.edges:
            builder.add_edge(a, b)
        for br in self.branches:
            builder.add_conditional_edges(br.source, self._router(br), [br.then, br.otherwise])
        for n in self.nodes:
            if not succ.get(n):
                builder.add_edge(n, END)
        graph = builder.compile(
            checkpointer=checkpointer, interrupt_before=sorted(self.approve) or None
        )
        finals = [n for n in self.nodes if not succ.get(n) or END in succ.get(n, [])]
        chain = self._chain(succ, preds) if checkpointer is None else None
        return CompiledGraph(
            self, graph, finals, [runners[n] for n in chain] if chain is not None else None
        )

    def _chain(self, succ: dict[str, list[str]], preds: dict[str, list[str]]) -> list[str] | None:
        """The nodes in order when the graph is a plain chain (no branches, joins, forks or
        approvals), else None."""
        if self.branches or self.approve or self.entry is None:
            return None
        order = [self.entry]
        while True:
            nxt = [n for n in succ.get(order[-1], []) if n != END]
            if not nxt:
                break
            if len(nxt) > 1 or len(preds[nxt[0]]) != 1 or nxt[0] in order:
                return None
            order.append(nxt[0])
        return order if len(order) == len(self.nodes) else None

    def _load(self, data: Any) -> S:
        if isinstance(data, self.state_type):
            return data
        return self.state_type.model_validate(data)

    def _node(self, name: str, fn: NodeFn[S], preds: list[str], keep: bool) -> _NodeRunner[S]:
        return _NodeRunner(self, name, fn, preds, keep)

    def _router(self, br: _Branch[S]) -> Callable[[_State], str]:
        def route(state: _State) -> str:
            raw = state.get("outputs", {}).get(br.source)
            if raw is None:
                return END  # the branch failed: stop it
            ran = state.get("meta", {}).get("visits", {}).get(br.then, 0)
            if br.max_iterations is not None and ran >= br.max_iterations:
                return br.otherwise
            return br.then if br.condition(self._load(raw)) else br.otherwise

        return route


_EMIT: contextvars.ContextVar[bool] = contextvars.ContextVar("ponder_emit", default=True)
# the node tasks of the run being streamed: LangGraph leaves them running when the stream
# is abandoned (a client gone), so the stream's owner cancels them itself
_RUNNING: contextvars.ContextVar[set[asyncio.Task[Any]] | None] = contextvars.ContextVar(
    "ponder_running", default=None
)


def _stream_writer() -> Callable[[Any], None]:
    from langgraph.config import get_stream_writer

    return get_stream_writer()


def _no_events(_event: Any) -> None:
    return None


# where a node's events go when a chain runs without LangGraph (None: LangGraph's writer)
_WRITER: contextvars.ContextVar[Callable[[Any], None] | None] = contextvars.ContextVar(
    "ponder_writer", default=None
)
_DONE = object()


class _Update:
    """A node's state update, sent on the custom stream next to its events."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values


class _NodeRunner(Generic[S]):
    """One node as LangGraph sees it: picks its input, runs, reports, records its output.

    Without a checkpointer outputs stay Python objects; with one they are stored as JSON
    (so any process can resume them)."""

    def __init__(
        self, graph: Graph[S], name: str, fn: NodeFn[S], preds: list[str], keep: bool
    ) -> None:
        self.graph, self.name, self.fn, self.preds, self.keep = graph, name, fn, preds, keep
        self._one_visit = {name: 1}  # shared by every update: reducers never change it
        self.record = name not in graph.raises

    async def __call__(self, state: _State) -> dict[str, Any]:
        # one coroutine per node: the bookkeeping around the component is plain calls
        running = _RUNNING.get()  # set while streamed: the stream's owner may cancel us
        task = asyncio.current_task() if running is not None else None
        if running is not None and task is not None:
            running.add(task)
        try:
            name = self.name
            write = (_WRITER.get() or _stream_writer()) if _EMIT.get() else _no_events
            pool, update, visits = self._input(state)
            if pool is None:
                return self._failed(write, update, visits, "every input failed upstream")
            if write is not _no_events:
                # built without validation: the runtime's own fields are known good (a
                # validated Event costs ~40% of the events' overhead, benchmarks/serve_load)
                write(_event("node_started", name, visits, {}))
            started = time.perf_counter()
            try:
                out = await self.fn(pool)
            except PonderError as e:  # a bug (any other exception) is never a failure string
                if not self.record:
                    raise
                return self._failed(write, update, visits, f"{type(e).__name__}: {e}")
            stored = out if self.keep else out.model_dump(mode="json")
            result = {"meta": update, "outputs": {name: stored}}
            if write is not _no_events:
                g = self.graph
                data = g.describe(pool, out) if g.describe is not None else {}
                data["seconds"] = time.perf_counter() - started
                write(_event("node_finished", name, visits, data))
                # the stream folds the state from these, so it need not ask LangGraph for
                # its "updates" stream as well (about a fifth of a streamed run's CPU)
                write(_Update(result))
            return result
        finally:
            if running is not None and task is not None:
                running.discard(task)

    def _input(self, state: _State) -> tuple[S | None, dict[str, Any], int]:
        """This node's input pool (None: every input failed), its bookkeeping, its visit."""
        g, name, preds = self.graph, self.name, self.preds
        meta = state.get("meta", {})
        step = meta.get("step", 0) + 1
        visits = meta.get("visits", {}).get(name, 0) + 1
        outputs = state.get("outputs", {})
        if len(preds) == 1 and name != g.entry:  # a chain link: its one predecessor's output
            link: dict[str, Any] = {"visits": self._one_visit, "stamps": {name: step}, "step": 1}
            raw = outputs.get(preds[0])
            return (None if raw is None else g._load(raw)), link, visits
        stamps = meta.get("stamps", {})
        seen = meta.get("consumed", {}).get(name, 0)
        if name == g.entry and not any(p in outputs for p in preds):
            inputs: list[Any] = [state["input"]]
            newest = seen
        else:
            fresh = [p for p in preds if stamps.get(p, 0) > seen] or [
                p for p in preds if p in outputs
            ]
            inputs = [outputs[p] for p in fresh if p in outputs]
            newest = max((stamps.get(p, 0) for p in fresh), default=seen)
        update: dict[str, Any] = {"visits": self._one_visit, "stamps": {name: step}, "step": 1}
        if len(preds) > 1:  # only a join chooses among inputs by what it already read
            update["consumed"] = {name: newest}
        usable = [x for x in inputs if x is not None]
        if not usable:
            return None, update, visits
        if len(usable) == 1:
            return g._load(usable[0]), update, visits
        return g.merge([g._load(x) for x in usable]), update, visits

    def _failed(
        self, write: Callable[[Any], None], update: dict[str, Any], visits: int, why: str
    ) -> dict[str, Any]:
        name = self.name
        write(Event(kind="node_failed", node=name, iteration=visits, data={"error": why}))
        result = {"meta": {**update, "failures": {name: why}}, "outputs": {name: None}}
        if write is not _no_events:
            write(_Update(result))
        return result


_REDUCERS: dict[str, Callable[[Any, Any], Any]] = {
    "outputs": _merge_dicts,
    "meta": _merge_meta,
}


def _fold(values: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply one node's update to ``values`` with the state's reducers."""
    for key, value in update.items():
        reduce = _REDUCERS.get(key)
        old = values.get(key)
        values[key] = value if reduce is None or old is None else reduce(old, value)


class CompiledGraph(Generic[S]):
    """A validated graph, ready to run (many times, on many threads)."""

    def __init__(
        self,
        spec: Graph[S],
        graph: Any,
        finals: list[str],
        chain: list[_NodeRunner[S]] | None = None,
    ) -> None:
        self.spec = spec
        self.graph = graph
        self.finals = finals
        # a plain chain run without a checkpointer or an audience needs none of LangGraph's
        # superstep machinery (about half of a query's client CPU in benchmarks/batch.py):
        # its node steps run in order, with the same bookkeeping and reducers
        self.chain = chain

    def with_checkpointer(self, checkpointer: BaseCheckpointSaver[Any]) -> CompiledGraph[S]:
        """The same graph saving to ``checkpointer`` (compiled with one, it stores JSON)."""
        return CompiledGraph(
            self.spec, self.graph.copy({"checkpointer": checkpointer}), self.finals
        )

    def _durability(self, thread_id: str | None) -> dict[str, Any]:
        # with a checkpointer, each step's checkpoint is written before the next step
        # starts: a crash (SIGKILL) never loses a finished step (LangGraph's default,
        # "async", writes it while the next step already runs)
        from langgraph.checkpoint.base import BaseCheckpointSaver

        saver = self.graph.checkpointer
        if thread_id is None or not isinstance(saver, BaseCheckpointSaver):
            return {}
        return {"durability": "sync"}

    def _config(self, thread_id: str | None) -> dict[str, Any]:
        if thread_id is None:
            if self.graph.checkpointer is not None:
                raise ConfigurationError("a graph with a checkpointer needs a thread_id")
            return {"recursion_limit": 10_000}
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": 10_000}

    async def _start_value(self, initial: S | None, thread_id: str | None) -> Any:
        """The input to send: a fresh start, or None to resume a checkpointed thread."""
        if thread_id is not None and self.graph.checkpointer is not None:
            snap = await self.graph.aget_state(self._config(thread_id))
            if snap.values.get("outputs") is not None:
                return None  # resume (or, if it had finished, return what it produced)
        if initial is None:
            raise ConfigurationError(f"thread {thread_id!r} has no run to resume; give an input")
        return {"input": initial.model_dump(mode="json"), "meta": {"step": 0}}

    def _result(
        self, values: dict[str, Any], thread_id: str | None, nxt: Sequence[str]
    ) -> GraphResult[S]:
        outputs = values.get("outputs", {})
        meta = values.get("meta", {})
        stamps = meta.get("stamps", {})
        ran = [n for n in self.finals if outputs.get(n) is not None]
        if not ran:
            ran = [n for n in outputs if outputs[n] is not None]
        if not ran:
            out = self.spec._load(values["input"])
        else:
            newest = max(stamps.get(n, 0) for n in ran)
            last = [self.spec._load(outputs[n]) for n in ran if stamps.get(n, 0) == newest]
            out = last[0] if len(last) == 1 else self.spec.merge(last)
        return GraphResult[S](
            output=out,
            failures=dict(meta.get("failures", {})),
            visits=dict(meta.get("visits", {})),
            thread_id=thread_id,
            interrupted_before=tuple(nxt),
        )

    async def arun(self, initial: S | None, *, thread_id: str | None = None) -> GraphResult[S]:
        """Run to the end (or to a node that needs approval); resume a thread if it has a
        checkpoint. Node failures are in ``failures``; they do not raise."""
        if self.chain is not None and thread_id is None and initial is not None:
            return await self._run_chain(self.chain, initial)
        config = self._config(thread_id)
        start = await self._start_value(initial, thread_id)
        token = _EMIT.set(False)  # nobody watches: nodes skip building events
        try:
            values = await self.graph.ainvoke(start, config, **self._durability(thread_id))
        finally:
            _EMIT.reset(token)
        nxt: Sequence[str] = ()
        if thread_id is not None and self.graph.checkpointer is not None:
            snap = await self.graph.aget_state(config)
            values, nxt = snap.values, snap.next
        return self._result(values, thread_id, nxt)

    async def _run_chain(self, chain: list[_NodeRunner[S]], initial: S) -> GraphResult[S]:
        values: dict[str, Any] = {"input": initial, "meta": {"step": 0}}
        token = _EMIT.set(False)
        try:
            for runner in chain:
                _fold(values, await runner(values))  # type: ignore[arg-type]
        finally:
            _EMIT.reset(token)
        return self._result(values, None, ())

    def run(self, initial: S | None, *, thread_id: str | None = None) -> GraphResult[S]:
        """Synchronous :meth:`arun` (not from inside a running event loop)."""
        return asyncio.run(self.arun(initial, thread_id=thread_id))

    async def astream(
        self, initial: S | None, *, thread_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """The run's events as they happen, ending with ``run_finished``."""
        async with aclosing(self._events(initial, thread_id)) as events:
            async for e, _ in events:
                yield e

    async def aevents(
        self, initial: S | None, *, thread_id: str | None = None
    ) -> AsyncGenerator[tuple[Event, GraphResult[S] | None], None]:
        """Like :meth:`astream`, paired with the result (set on ``run_finished`` only), for
        front ends that render the events and then need the output."""
        async with aclosing(self._events(initial, thread_id)) as events:
            async for pair in events:
                yield pair

    async def approve(self, thread_id: str) -> GraphResult[S]:
        """Let a run paused before a node that needs approval go on."""
        return await self.arun(None, thread_id=thread_id)

    async def _chain_events(
        self, chain: list[_NodeRunner[S]], initial: S
    ) -> AsyncGenerator[tuple[Event, GraphResult[S] | None], None]:
        """A plain chain, streamed without LangGraph: the nodes run in order in one task
        that folds their updates; their events reach the consumer through a queue."""
        values: dict[str, Any] = {"input": initial, "meta": {"step": 0}}
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def drive() -> None:
            _WRITER.set(queue.put_nowait)  # this task's own context
            try:
                for runner in chain:
                    _fold(values, await runner(values))  # type: ignore[arg-type]
            finally:
                queue.put_nowait(_DONE)

        task = asyncio.create_task(drive())
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, Event):
                    yield item, None
            await task  # a bug in a node propagates, as on LangGraph's path
        finally:
            if not task.done():  # the consumer stopped: cancel the nodes now
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        result = self._result(values, None, ())
        data = {"failures": result.failures, "visits": result.visits, "interrupted_before": []}
        yield Event(kind="run_finished", data=data), result

    async def _events(
        self, initial: S | None, thread_id: str | None, *, events: bool = True
    ) -> AsyncGenerator[tuple[Event, GraphResult[S] | None], None]:
        if self.chain is not None and thread_id is None and initial is not None and events:
            async with aclosing(self._chain_events(self.chain, initial)) as chained:
                async for pair in chained:
                    yield pair
            return
        config = self._config(thread_id)
        start = await self._start_value(initial, thread_id)
        # fold the small per-node updates ourselves rather than stream whole states
        values: dict[str, Any] | None = dict(start) if start is not None else None
        modes = ["custom"] if events else ["updates"]
        # closed explicitly: a consumer that stops (a client gone) must cancel the nodes now,
        # not when the generator is garbage collected
        running: set[asyncio.Task[Any]] = set()
        token = _RUNNING.set(running)
        stream = self.graph.astream(start, config, stream_mode=modes, **self._durability(thread_id))
        try:
            async with aclosing(stream):
                async for mode, chunk in stream:
                    if mode == "custom" and isinstance(chunk, Event):
                        yield chunk, None
                    elif values is None:
                        continue
                    elif mode == "custom" and isinstance(chunk, _Update):
                        _fold(values, chunk.values)
                    elif mode == "updates" and isinstance(chunk, dict):
                        for update in chunk.values():
                            _fold(values, update or {})
        finally:
            with contextlib.suppress(ValueError):  # finalised from another context
                _RUNNING.reset(token)
            for t in running:
                t.cancel()
        nxt: Sequence[str] = ()
        if thread_id is not None and self.graph.checkpointer is not None:
            snap = await self.graph.aget_state(config)
            values = snap.values
            nxt = snap.next
        assert values is not None
        result = self._result(values, thread_id, nxt)
        event = Event(
            kind="run_finished",
            data={
                "failures": result.failures,
                "visits": result.visits,
                "interrupted_before": list(nxt),
            },
        )
        yield event, result
