"""The graph runtime: typed steps over one state, compiled to LangGraph (docs/workflows.md)."""

from ponder.graphs._results import Event, GraphError, GraphResult
from ponder.graphs._runtime import CompiledGraph, Graph

__all__ = ["CompiledGraph", "Event", "Graph", "GraphError", "GraphResult"]
