"""The workflow spec: what YAML/JSON files and the Python SDK both produce.

Two shapes: Archon-style ``layers`` (a list; each layer one component or a list of
components applied in parallel to the same candidates) or a general graph of ``nodes``
with ``edges`` (plain, or a branch ``when`` a condition holds, with an iteration bound for
loops). Models, the budget and the seed are set per workflow; a node can override the
seed and ask for approval before it runs.

Short forms accepted everywhere a component goes::

    vote                                   # a bare name
    {generate: {model: m, n: 5}}           # name -> parameters
    {component: generate, model: m, n: 5}  # the long form
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ponder._internal.env import expand_env
from ponder.backends._modelref import ModelRef

__all__ = [
    "BudgetSpec",
    "ComponentSpec",
    "EdgeSpec",
    "ModelSpec",
    "NodeSpec",
    "WorkflowSpec",
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Spec):
    """A model the workflow uses: ``"vllm:M@http://..."`` or ``{ref: ..., max_concurrency}``.

    ``${VAR}`` / ``${VAR:-default}`` in ``ref`` are read from the environment.
    """

    ref: str
    max_concurrency: int | None = Field(None, ge=1)
    price: tuple[float, float] | None = Field(
        None, description="US dollars per million input and output tokens (cost accounting)."
    )

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        data = {"ref": data} if isinstance(data, str) else data
        if isinstance(data, dict) and isinstance(data.get("ref"), str):
            data = {**data, "ref": expand_env(data["ref"])}
        return data

    @functools.cached_property
    def _parsed(self) -> tuple[str, ModelRef]:
        return self.ref, ModelRef.parse(self.ref)

    @property
    def model_ref(self) -> ModelRef:
        """``ref`` parsed, once (checking the spec and building its models both read this);
        a malformed reference raises :class:`ConfigurationError` with the grammar."""
        ref, parsed = self._parsed
        if ref != self.ref:  # a copy with another ref (model_copy keeps the cached value)
            self.__dict__.pop("_parsed", None)
            ref, parsed = self._parsed
        return parsed


class BudgetSpec(_Spec):
    """Limits for one run of the workflow (per question)."""

    max_cost: float | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    max_requests: int | None = Field(None, ge=1)


class ComponentSpec(_Spec):
    """One component: its registered name, the model(s) it uses, its parameters."""

    component: str
    model: str | None = None
    models: tuple[str, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"component": data}
        if isinstance(data, dict) and "component" not in data and len(data) == 1:
            ((name, params),) = data.items()
            data = {"component": name, **(params or {})}
        if isinstance(data, dict) and "params" not in data:
            known = {"component", "model", "models"}
            rest = {k: v for k, v in data.items() if k not in known}
            data = {k: v for k, v in data.items() if k in known} | {"params": rest}
        if isinstance(data, dict) and isinstance(data.get("models"), str):
            data = {**data, "models": [data["models"]]}
        return data


class NodeSpec(_Spec):
    """A node: one component or a layer of parallel components."""

    components: tuple[ComponentSpec, ...]
    approve: bool = Field(False, description="Pause for approval before this node runs.")
    seed: int | None = None
    on_error: Literal["record", "raise"] = Field(
        "record",
        description="On a model-layer failure (PonderError: a server fault, a timeout, a "
        "budget): 'record' it as the node's failure and let the rest of the graph go on, "
        "or 'raise' it out of the run. Other exceptions (bugs) always propagate.",
    )

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"components": data}
        if isinstance(data, dict) and "components" not in data:
            extra = {k: data[k] for k in ("approve", "seed", "on_error") if k in data}
            rest = {k: v for k, v in data.items() if k not in ("approve", "seed", "on_error")}
            if "layer" in rest:
                return {"components": rest["layer"], **extra}
            return {"components": [rest], **extra}
        if isinstance(data, str):
            return {"components": [data]}
        return data


class EdgeSpec(_Spec):
    """``from -> to``; with ``when``, a branch: ``to`` if the condition holds else ``else``.

    Conditions: ``<metric> <op> <number>`` joined by ``and``/``or``; metrics:
    ``candidates``, ``answered``, ``verified``, ``verified_share``, ``support``,
    ``has_final``, ``tokens``, ``cost``, ``max_score(NAME)``, ``min_score(NAME)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from")
    to: str
    when: str | None = None
    otherwise: str | None = Field(None, alias="else")
    max_iterations: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        if isinstance(data, list | tuple) and len(data) == 2:
            return {"from": data[0], "to": data[1]}
        if isinstance(data, str) and "->" in data:
            a, b = (x.strip() for x in data.split("->", 1))
            return {"from": a, "to": b}
        return data

    @model_validator(mode="after")
    def _check(self) -> EdgeSpec:
        if self.when is None and (self.otherwise is not None or self.max_iterations is not None):
            raise ValueError("'else' and 'max_iterations' need a 'when' condition")
        return self


class WorkflowSpec(_Spec):
    """A whole workflow."""

    name: str = "workflow"
    description: str = ""
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    seed: int = 0
    budget: BudgetSpec | None = None
    concurrency: int | None = Field(None, ge=1, description="In-flight requests per model.")
    system: str | None = Field(None, description="System prompt given to generators.")
    layers: tuple[NodeSpec, ...] = ()
    nodes: dict[str, NodeSpec] = Field(default_factory=dict)
    edges: tuple[EdgeSpec, ...] = ()
    entry: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> WorkflowSpec:
        if bool(self.layers) == bool(self.nodes):
            raise ValueError("give either 'layers' (a stack) or 'nodes' with 'edges' (a graph)")
        if self.layers and self.edges:
            raise ValueError("'edges' belong to 'nodes'; a 'layers' stack runs in order")
        return self

    def node_map(self) -> dict[str, NodeSpec]:
        """The graph's nodes (a stack's layers are ``layer1``, ``layer2``, ...)."""
        if self.layers:
            return {f"layer{i + 1}": n for i, n in enumerate(self.layers)}
        return dict(self.nodes)

    def edge_list(self) -> tuple[EdgeSpec, ...]:
        if self.layers:
            names = list(self.node_map())
            return tuple(
                EdgeSpec.model_validate({"from": a, "to": b}) for a, b in itertools.pairwise(names)
            )
        return self.edges
