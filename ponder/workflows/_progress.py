"""A run's progress as a table (node, status, round, candidates, tokens, cost), kept from
its events; shown live by ``ponder run`` and by ``Workflow.run(..., progress=True)``, in a
terminal or a Jupyter notebook (rich renders in both)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ponder.graphs import Event

__all__ = ["RunProgress"]


class RunProgress:
    """Rows per node, updated from the run's :class:`ponder.graphs.Event` s."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: dict[str, list[str]] = {}
        self.finished: dict[str, Any] | None = None

    def update(self, e: Event) -> None:
        if e.node is not None:
            d = e.data
            status = e.kind.removeprefix("node_")
            if e.kind == "node_failed":
                status = f"[red]failed[/red]: {d.get('error', '')}"[:80]
            prev = self.rows.get(e.node, ["", "", "", "", ""])
            self.rows[e.node] = [
                status,
                str(e.iteration),
                str(d.get("candidates", prev[2])),
                str(d.get("tokens", prev[3])),
                f"${d['cost']:.4f}" if "cost" in d else prev[4],
            ]
        elif e.kind == "run_finished":
            self.finished = dict(e.data)

    def table(self) -> Table:
        t = Table(title=self.title)
        for col in ("node", "status", "round", "candidates", "tokens", "cost"):
            t.add_column(col)
        for node, row in self.rows.items():
            t.add_row(node, *row)
        return t
