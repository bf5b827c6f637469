"""The run service the front ends share: what the Slack app (and any other front end)
needs from the process that owns the workflows. :class:`ponder.apps.server.PonderServer`
is one; a front end depends on this protocol, never on the HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from ponder.agents import Candidate, Pool
from ponder.apps._serve_settings import ServeSettings
from ponder.errors import ConfigurationError
from ponder.graphs import GraphResult
from ponder.workflows import Workflow, load_workflow

__all__ = ["RunService", "answer_texts", "load_workflows"]


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


def load_workflows(directory: str | Path, **kwargs: Any) -> dict[str, Workflow]:
    """Every ``*.yaml``/``*.yml``/``*.json`` workflow in ``directory`` and its subfolders
    (hidden ones skipped), by its name. Two files with one name are refused, naming both."""
    found: dict[str, Workflow] = {}
    source: dict[str, Path] = {}
    path = Path(directory)
    files = sorted(
        p
        for p in path.rglob("*")
        if p.suffix in (".yaml", ".yml", ".json")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise ConfigurationError(f"no workflow files (*.yaml, *.yml, *.json) in {path}")
    for f in files:
        wf = load_workflow(f, **kwargs)
        name = wf.spec.name or f.stem
        if name in found:
            raise ConfigurationError(
                f"two workflows are named {name!r}: {source[name]} and {f}; rename one "
                "(its 'name:' field) so clients can tell them apart"
            )
        found[name] = wf
        source[name] = f
    return found
