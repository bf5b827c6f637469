"""Checking a :class:`WorkflowSpec` before any model is called: component names and
parameters (against each component's config class), model references, node references,
conditions, and loops without a bounded exit. Problems are reported together, each with
its path in the spec (``nodes.draft.components[0].n``), which the YAML loader turns into
file:line.

This module imports only what checking needs (a component's own module, not the whole
library), so ``ponder validate`` starts fast (benchmarks/cli_start.py).
"""

from __future__ import annotations

import difflib
import importlib
import operator
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ponder.agents._base import COMPONENTS, ComponentInfo, find_component, unknown_component
from ponder.agents._state import Pool, merge_pools
from ponder.agents._vote import vote
from ponder.errors import ConfigurationError
from ponder.graphs import Graph, GraphError
from ponder.types import GenerateParams
from ponder.workflows._spec import ComponentSpec, WorkflowSpec

__all__ = ["Problem", "WorkflowError", "check", "parse_condition", "pydantic_problems"]

Runner = Callable[[Pool], Awaitable[Pool]]

# components the workflow layer itself defines (they read and write a memory store)
_WORKFLOW_COMPONENTS = {
    "memory_read": "ponder.workflows._memory",
    "memory_curate": "ponder.workflows._memory",
}


def component_info(name: str) -> ComponentInfo | None:
    """The registry entry of ``name``, importing only the module that defines it."""
    info = find_component(name)
    if info is None and name in _WORKFLOW_COMPONENTS:
        importlib.import_module(_WORKFLOW_COMPONENTS[name])
        info = COMPONENTS.get(name)
    return info


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


def pydantic_problems(
    e: ValidationError,
    prefix: tuple[str | int, ...] = (),
    known: Collection[str] | Callable[[tuple[str | int, ...]], Collection[str]] = (),
) -> list[Problem]:
    """Problems for a pydantic error; an unknown key is named, with the nearest of
    ``known`` (or of ``known(location)``) as a suggestion."""
    out = []
    for err in e.errors():
        loc = tuple(x for x in err["loc"] if not str(x).startswith("function-"))
        message = str(err["msg"])
        if err["type"] == "extra_forbidden" and loc:
            key = str(loc[-1])
            keys = known(loc) if callable(known) else known
            close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.7)
            message = f"unknown key {key!r}"
            if close:
                message += f"; did you mean {close[0]!r}?"
            if keys:
                message += f" (known: {', '.join(sorted(keys))})"
        out.append(Problem(prefix + loc, message))
    return out


# config fields that become sampling parameters of a model call, and their names there
_SAMPLING = {
    "n": "n",
    "samples": "n",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
}


def _sampling_problems(params: dict[str, Any]) -> list[Problem]:
    """Values the model layer would refuse at run time (``n: 100000000``), found now."""
    out = []
    for field, target in _SAMPLING.items():
        value = params.get(field)
        if value is None:
            continue
        try:
            GenerateParams.model_validate({target: value})
        except ValidationError as e:
            msg = e.errors()[0]["msg"]
            out.append(Problem((field,), f"{msg} (a model call refuses {target}={value!r})"))
    return out


def _component_config(
    spec: ComponentSpec, seed: int, system: str | None
) -> tuple[ComponentInfo | None, BaseModel | None, list[Problem]]:
    info = component_info(spec.component)
    if info is None:
        for module in set(_WORKFLOW_COMPONENTS.values()):  # every name in the message
            importlib.import_module(module)
        return None, None, [Problem(("component",), unknown_component(spec.component))]
    if info.config is None:
        return (
            info,
            None,
            [
                Problem(
                    ("component",),
                    f"component {spec.component!r} is registered for Python use only (it "
                    "declares no config class); register it with "
                    "@register_component(config=...) to use it from a workflow",
                )
            ],
        )
    params = dict(spec.params)
    fields = info.config.model_fields
    if "seed" in fields and "seed" not in params:
        params["seed"] = seed
    if spec.component == "generate" and system is not None and "system" not in params:
        params["system"] = system
    if "slot" in params:
        return info, None, [Problem(("slot",), "is set by the workflow (node and position)")]
    prm = params.pop("prm_model", None) if info.prm else None
    bounds = _sampling_problems(params)
    try:
        config = info.config.model_validate(params)
    except ValidationError as e:
        keys = {f for f in fields if f != "slot"} | ({"prm_model"} if info.prm else set())
        keys |= {"model", "models"} if info.needs_model else set()
        flagged = {p.path for p in bounds}
        found = [p for p in pydantic_problems(e, (), keys) if p.path not in flagged]
        return info, None, bounds + found
    if bounds:
        return info, None, bounds
    if prm is not None and not isinstance(prm, str):
        return info, None, [Problem(("prm_model",), "must name a model")]
    return info, config, []


def check(spec: WorkflowSpec) -> list[Problem]:
    """Every problem in ``spec``, with its path; empty when it can run."""
    problems: list[Problem] = []
    for name, m in spec.models.items():
        try:
            m.model_ref  # noqa: B018  (parsed here once, and kept)
        except ConfigurationError as e:
            problems.append(Problem(("models", name), str(e)))
    nodes = spec.node_map()
    base: tuple[str | int, ...] = ("layers",) if spec.layers else ("nodes",)
    for i, (name, node) in enumerate(nodes.items()):
        where: tuple[str | int, ...] = base + ((i,) if spec.layers else (name,))
        for j, comp in enumerate(node.components):
            at = (*where, "components", j) if len(node.components) > 1 or not spec.layers else where
            info, _, found = _component_config(comp, node.seed or spec.seed, spec.system)
            problems += [Problem(at + p.path, p.message) for p in found]
            if info is None:
                continue
            refs = ([comp.model] if comp.model else []) + list(comp.models)
            if info.needs_model and not refs:
                if len(spec.models) == 1:
                    continue  # the only model is implied
                problems.append(Problem((*at, "model"), f"{comp.component} needs a model"))
            if len(refs) > 1 and info.models != "many":
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
            _graph(spec).validate()
        except GraphError as e:
            path: tuple[str | int, ...] = ("nodes", e.node) if e.node else ()
            problems.append(Problem(path, str(e).split(": ", 1)[-1] if e.node else str(e)))
    return problems


def _graph(
    spec: WorkflowSpec,
    steps: dict[str, Runner] | None = None,
    describe: Callable[[Pool, Pool], dict[str, Any]] | None = None,
) -> Graph[Pool]:
    """The spec's graph; ``steps`` None gives a dry graph (validation only)."""
    graph: Graph[Pool] = Graph(Pool, merge=merge_pools, describe=describe)
    nodes = spec.node_map()
    order = list(nodes)
    if spec.entry is not None:
        order.remove(spec.entry)
        order.insert(0, spec.entry)

    async def noop(pool: Pool) -> Pool:
        return pool

    for name in order:
        fn: Runner = noop if steps is None else steps[name]
        graph.add_node(name, fn, approve=nodes[name].approve, on_error=nodes[name].on_error)
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
