"""Workflows: a pydantic spec, loaded from YAML/JSON or built in Python, compiled to a graph.

>>> from ponder.workflows import load_workflow
>>> wf = load_workflow("stack.yaml")                 # doctest: +SKIP
>>> result = wf.run("What is 17 * 23?")              # doctest: +SKIP
>>> result.output.final                              # doctest: +SKIP
"""

from ponder.workflows._archon import archon_to_spec, spec_to_yaml
from ponder.workflows._build import (
    Problem,
    Workflow,
    WorkflowError,
    parse_condition,
)
from ponder.workflows._client import ToolTurn, tool_turn, typed_answer
from ponder.workflows._rebind import parse_bindings, rebind
from ponder.workflows._sdk import GraphBuilder, Pipeline, step
from ponder.workflows._spec import (
    BudgetSpec,
    ComponentSpec,
    EdgeSpec,
    ModelSpec,
    NodeSpec,
    WorkflowSpec,
)
from ponder.workflows._yaml import load_spec, load_workflow, workflow_schema

__all__ = [
    "BudgetSpec",
    "ComponentSpec",
    "EdgeSpec",
    "GraphBuilder",
    "ModelSpec",
    "NodeSpec",
    "Pipeline",
    "Problem",
    "ToolTurn",
    "Workflow",
    "WorkflowError",
    "WorkflowSpec",
    "archon_to_spec",
    "load_spec",
    "load_workflow",
    "parse_bindings",
    "parse_condition",
    "rebind",
    "spec_to_yaml",
    "step",
    "tool_turn",
    "typed_answer",
    "workflow_schema",
]
