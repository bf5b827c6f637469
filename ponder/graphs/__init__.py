"""The graph runtime: typed steps over one state, compiled to LangGraph (docs/workflows.md)."""

from ponder.graphs._runtime import CompiledGraph, Event, Graph, GraphError, GraphResult

__all__ = ["CompiledGraph", "Event", "Graph", "GraphError", "GraphResult"]
