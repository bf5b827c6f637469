# The package's names for type checkers; at run time __init__.py loads each on first
# use (lazy_loader reads this file), so importing the package costs nothing up front.

from ._archon import archon_to_spec, spec_to_yaml
from ._build import (
    Problem,
    Workflow,
    WorkflowError,
    parse_condition,
)
from ._client import ToolTurn, tool_turn, typed_answer
from ._rebind import parse_bindings, rebind
from ._sdk import GraphBuilder, Pipeline, step
from ._spec import (
    BudgetSpec,
    ComponentSpec,
    EdgeSpec,
    ModelSpec,
    NodeSpec,
    WorkflowSpec,
)
from ._yaml import load_spec, load_workflow, workflow_schema

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
