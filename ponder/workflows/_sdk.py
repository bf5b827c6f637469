"""Composing workflows in Python: the same :class:`WorkflowSpec` YAML files produce.

>>> wf = (
...     Pipeline(models={"a": "vllm:A@http://h:8000/v1", "b": "vllm:B@http://h:8001/v1"})
...     .layer(step("generate", models=["a", "b"], n=5))
...     .then("critique", model="a")
...     .then("rank", model="a", top_k=3)
...     .then("fuse", model="a")
...     .build()
... )  # doctest: +SKIP
>>> wf.run("What is 17 * 23?").output.final  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ponder.backends import Model
from ponder.settings import Settings
from ponder.workflows._build import Workflow
from ponder.workflows._spec import (
    BudgetSpec,
    ComponentSpec,
    EdgeSpec,
    ModelSpec,
    NodeSpec,
    WorkflowSpec,
)

__all__ = ["GraphBuilder", "Pipeline", "step"]


def step(
    component: str, *, model: str | None = None, models: Sequence[str] = (), **params: Any
) -> ComponentSpec:
    """One component: ``step("rank", model="a", top_k=3)``."""
    return ComponentSpec(component=component, model=model, models=tuple(models), params=params)


class _Base:
    def __init__(
        self,
        *,
        models: dict[str, str | ModelSpec] | None = None,
        seed: int = 0,
        budget: BudgetSpec | None = None,
        concurrency: int | None = None,
        system: str | None = None,
        name: str = "workflow",
    ) -> None:
        self._common: dict[str, Any] = {
            "name": name,
            "models": {
                k: v if isinstance(v, ModelSpec) else ModelSpec(ref=v)
                for k, v in (models or {}).items()
            },
            "seed": seed,
            "budget": budget,
            "concurrency": concurrency,
            "system": system,
        }

    def spec(self) -> WorkflowSpec:
        raise NotImplementedError

    def build(
        self,
        *,
        settings: Settings | None = None,
        checkpoint: str | Path | None = None,
        models: dict[str, Model] | None = None,
    ) -> Workflow:
        """A validated, runnable :class:`Workflow` (``models`` passes ready model objects)."""
        return Workflow(self.spec(), settings=settings, checkpoint=checkpoint, models=models)


def _node(
    what: str | ComponentSpec | Sequence[ComponentSpec], approve: bool, params: dict[str, Any]
) -> NodeSpec:
    if isinstance(what, str):
        comps: tuple[ComponentSpec, ...] = (step(what, **params),)
    elif isinstance(what, ComponentSpec):
        comps = (what,)
    else:
        comps = tuple(what)
    return NodeSpec(components=comps, approve=approve)


class Pipeline(_Base):
    """An Archon-style stack: layers run in order, components of a layer in parallel."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._layers: list[NodeSpec] = []

    def layer(self, *components: ComponentSpec, approve: bool = False) -> Pipeline:
        """A layer of one or more components applied in parallel to the same candidates."""
        self._layers.append(NodeSpec(components=components, approve=approve))
        return self

    def then(self, component: str, *, approve: bool = False, **params: Any) -> Pipeline:
        """A layer of one component: ``.then("rank", model="a", top_k=3)``."""
        self._layers.append(_node(component, approve, params))
        return self

    def spec(self) -> WorkflowSpec:
        return WorkflowSpec(**self._common, layers=tuple(self._layers))


class GraphBuilder(_Base):
    """A general graph: nodes, edges, and branches on the state (loops need a bound)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._nodes: dict[str, NodeSpec] = {}
        self._edges: list[EdgeSpec] = []

    def node(
        self,
        name: str,
        what: str | ComponentSpec | Sequence[ComponentSpec],
        *,
        approve: bool = False,
        **params: Any,
    ) -> GraphBuilder:
        self._nodes[name] = _node(what, approve, params)
        return self

    def edge(self, source: str, target: str) -> GraphBuilder:
        self._edges.append(EdgeSpec.model_validate({"from": source, "to": target}))
        return self

    def branch(
        self,
        source: str,
        when: str,
        then: str,
        otherwise: str = "END",
        *,
        max_iterations: int | None = None,
    ) -> GraphBuilder:
        """After ``source``: ``then`` if ``when`` holds (e.g. ``"verified_share < 0.5"``),
        else ``otherwise``; ``max_iterations`` bounds a loop."""
        self._edges.append(
            EdgeSpec.model_validate(
                {
                    "from": source,
                    "to": then,
                    "when": when,
                    "else": otherwise,
                    "max_iterations": max_iterations,
                }
            )
        )
        return self

    def spec(self) -> WorkflowSpec:
        return WorkflowSpec(**self._common, nodes=self._nodes, edges=tuple(self._edges))
