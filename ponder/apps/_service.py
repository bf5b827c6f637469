"""The run service the front ends share: what the Slack app (and any other front end)
needs from the process that owns the workflows. :class:`ponder.apps.server.PonderServer`
is one; a front end depends on this protocol, never on the HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from ponder.agents import Candidate, Pool
from ponder.apps._serve_settings import ServeSettings
from ponder.graphs import GraphResult
from ponder.workflows import Workflow

__all__ = ["RunService", "answer_texts"]


class RunService(Protocol):
    """Runs named workflows for an owner, under the owner's limits."""

    @property
    def settings(self) -> ServeSettings:
        """The serving settings (Slack tokens, update interval, shutdown grace)."""
        ...

    @property
    def workflows(self) -> Mapping[str, Workflow]:
        """The workflows by name."""
        ...

    @property
    def redis(self) -> Any | None:
        """A shared Redis client (redis.asyncio) when limits are kept in Redis, else None:
        front ends use it to deduplicate retried deliveries across replicas."""
        ...

    def execute(
        self, workflow: str, pool: Pool, owner: str, trace: Any = None, live: bool = False
    ) -> AsyncIterator[tuple[Any, dict[str, Any], GraphResult[Pool] | None]]:
        """Run ``workflow`` on ``pool``: yields (run record, event, result on the last
        event); the run is cancelled if the consumer stops iterating. ``trace`` is the
        caller's trace context (``ponder.tracing.extract``), which the run's spans join;
        with ``live``, the answer's text also comes as ``token`` events as it is written."""
        ...


def answer_texts(pool: Pool, n: int) -> list[str]:
    """The chosen candidate's text first, then other candidates with distinct answers."""
    cands: list[Candidate] = list(pool.candidates)
    chosen = [c for c in cands if pool.final is not None and c.answer == pool.final][:1]
    out = [c.text for c in chosen]
    seen = {pool.final} if chosen else set()
    for c in cands:
        if len(out) >= n:
            break
        if c.answer not in seen and c.text not in out:
            out.append(c.text)
            seen.add(c.answer)
    if not out and pool.final is not None:
        out = [pool.final]
    return out[:n]
