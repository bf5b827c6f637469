"""What a graph run gives back: its events as they happen, its result at the end, and
the error a malformed graph raises."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from ponder.errors import ConfigurationError

__all__ = ["Event", "GraphError", "GraphResult"]

S = TypeVar("S", bound=BaseModel)


class GraphError(ConfigurationError):
    """A graph is malformed; ``node`` names where (None: the graph as a whole)."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        self.node = node
        super().__init__(f"node {node!r}: {message}" if node else message)


class Event(BaseModel):
    """One thing that happened in a run (what front ends render).

    ``kind``: ``node_started``, ``node_finished``, ``node_failed``, ``info`` (whatever a
    node's ``describe`` adds, e.g. candidates and spend), ``token`` (a live answer's text
    as it is written: ``data.text``), ``run_finished``.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["node_started", "node_finished", "node_failed", "info", "token", "run_finished"]
    node: str | None = None
    iteration: int = 0
    data: dict[str, Any] = {}


class GraphResult(BaseModel, Generic[S]):
    """The end state, which nodes failed and why, and how often each node ran."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    output: S
    failures: dict[str, str]
    visits: dict[str, int]
    thread_id: str | None = None
    interrupted_before: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        """A notebook's view: the failures and visits, then the output's own view."""
        import html

        out = getattr(self.output, "_repr_html_", None)
        body = out() if callable(out) else f"<pre>{html.escape(repr(self.output))}</pre>"
        failed = "".join(
            f"<li><b>{html.escape(n)}</b>: {html.escape(why)}</li>"
            for n, why in self.failures.items()
        )
        visits = ", ".join(f"{html.escape(n)} x{k}" for n, k in self.visits.items())
        head = f"<p><b>Nodes run</b>: {visits}</p>" if visits else ""
        if failed:
            head += f"<p><b>Failed</b>:</p><ul>{failed}</ul>"
        return head + str(body)
