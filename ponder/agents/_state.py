"""The typed state every reasoning component reads and returns.

A :class:`Pool` holds the query and its :class:`Candidate` answers. Components never
mutate a pool in place: each returns a new one (``pool.with_candidates(...)``), so a graph
can checkpoint any step and a failed component leaves its input intact.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ponder.agents._answers import AnswerKind, extract_answer
from ponder.types import Attachment, Usage

__all__ = ["Candidate", "Pool", "Provenance", "Spend", "VoteResult", "merge_pools"]


class Provenance(BaseModel):
    """Where a candidate came from."""

    model_config = ConfigDict(frozen=True)

    component: str
    model: str | None = None
    layer: int = 0
    seed: int | None = None
    index: int = 0
    parents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Spend:
    """Tokens, requests and dollars a step used (a plain dataclass: it is added up a lot).

    ``prompt_tokens``, ``completion_tokens`` and ``cost`` are what was generated (and
    billed) now; ``cached_tokens`` is what samples served from the response cache had
    used when they were generated (prompt and completion; ``cached_completion_tokens``
    the completion part), and ``saved_cost`` what they would have cost, so two runs
    compare the same whatever the cache held."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cost: float = 0.0
    cached_tokens: int = 0
    saved_cost: float = 0.0
    cached_completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Tokens generated now (not counting cache hits)."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def all_tokens(self) -> int:
        """Tokens of the whole work, generated now or served from the cache."""
        return self.prompt_tokens + self.completion_tokens + self.cached_tokens

    @property
    def all_completion_tokens(self) -> int:
        """Tokens the model wrote for the whole work, now or served from the cache (the
        "generated tokens" a technique costs, the same on a cold and a warm cache)."""
        return self.completion_tokens + self.cached_completion_tokens

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.requests + other.requests,
            self.cost + other.cost,
            self.cached_tokens + other.cached_tokens,
            self.saved_cost + other.saved_cost,
            self.cached_completion_tokens + other.cached_completion_tokens,
        )

    def __sub__(self, other: Spend) -> Spend:
        return Spend(
            self.prompt_tokens - other.prompt_tokens,
            self.completion_tokens - other.completion_tokens,
            self.requests - other.requests,
            self.cost - other.cost,
            self.cached_tokens - other.cached_tokens,
            self.saved_cost - other.saved_cost,
            self.cached_completion_tokens - other.cached_completion_tokens,
        )

    @classmethod
    def of(
        cls,
        usage: Usage,
        cost: float = 0.0,
        requests: int = 0,
        cached: Usage | None = None,
        saved: float = 0.0,
    ) -> Spend:
        return cls(
            usage.prompt_tokens,
            usage.completion_tokens,
            requests,
            cost,
            cached.total_tokens if cached is not None else 0,
            saved,
            cached.completion_tokens if cached is not None else 0,
        )


_NO_SPEND = Spend()  # frozen, so one shared default serves every pool and candidate


class ToolUse(BaseModel):
    """One tool call an agent made and what came back."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str
    result: str
    error: bool = False
    seconds: float = 0.0
    attachments: tuple[Attachment, ...] = Field(
        (), description="Binary content the tool returned (images, audio, blobs), typed."
    )


class AgentStep(BaseModel):
    """One turn of an agent: what the model wrote and the tools it called."""

    model_config = ConfigDict(frozen=True)

    text: str = ""
    tool_uses: tuple[ToolUse, ...] = ()


class Candidate(BaseModel):
    """One answer to the query, with everything components learned about it.

    ``answer`` is the extracted final answer (None when the text had none: the candidate
    stays, marked by ``error``). ``scores`` are keyed by the scorer's name (``verifier``,
    ``rank``, ``reward``, ``mean_logprob``, ``tests``); ``verdicts`` by the verifier's.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    answer: str | None = None
    error: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    critiques: tuple[str, ...] = ()
    verdicts: dict[str, bool | None] = Field(default_factory=dict)
    provenance: Provenance
    spend: Spend = _NO_SPEND
    finish_reason: str | None = None
    trajectory: tuple[AgentStep, ...] = Field(
        (), description="An agent's turns: its text, tool calls and their results."
    )
    value: dict[str, Any] | None = Field(
        None, description="A typed answer (generate with output=...), as validated JSON data."
    )

    @classmethod
    def read(
        cls,
        *,
        id: str,
        text: str,
        provenance: Provenance,
        kind: AnswerKind = "auto",
        **fields: Any,
    ) -> Candidate:
        """A candidate for a model's reply: its final answer extracted, or marked missing."""
        answer = extract_answer(text, kind)
        if answer is None:
            return cls(
                id=id, text=text, error="no final answer found", provenance=provenance, **fields
            )
        return cls(id=id, text=text, answer=answer, provenance=provenance, **fields)

    def scored(self, name: str, value: float) -> Candidate:
        return self.model_copy(update={"scores": {**self.scores, name: value}})

    def judged(self, name: str, verdict: bool | None, reason: str | None = None) -> Candidate:
        update: dict[str, object] = {"verdicts": {**self.verdicts, name: verdict}}
        if reason is not None and verdict is None:
            update["error"] = reason
        return self.model_copy(update=update)


class VoteResult(BaseModel):
    """The winner of a vote and how it was reached.

    ``answer`` is the winning answer as first written by a candidate (None if no candidate
    had a parseable answer); ``key`` its normalised form; ``tally`` the weight per key;
    ``support`` the winner's share of the counted weight; ``abstained`` the candidates
    without an answer (or with zero weight).
    """

    model_config = ConfigDict(frozen=True)

    answer: str | None
    key: str | None
    tally: dict[str, float]
    support: float
    counted: int
    abstained: int
    samples_used: int = 0
    samples_saved: int = 0


class Pool(BaseModel):
    """A query, its candidates, and the run's record (spend, notes, the chosen answer)."""

    model_config = ConfigDict(frozen=True)

    query: str
    system: str | None = None
    candidates: tuple[Candidate, ...] = ()
    spend: Spend = _NO_SPEND
    notes: tuple[str, ...] = ()
    final: str | None = Field(None, description="The chosen final answer, once decided.")
    reference: str | None = Field(None, description="Ground truth, for evaluation only.")
    tests: tuple[str, ...] = Field((), description="Unit tests for a coding query.")
    ledger: dict[str, Spend] = Field(
        default_factory=dict, description="Spend per workflow step (merged across branches)."
    )
    vote: VoteResult | None = Field(
        None, description="How the last vote that set ``final`` was reached."
    )

    def with_candidates(
        self,
        candidates: list[Candidate] | tuple[Candidate, ...],
        spend: Spend | None = None,
        *,
        step: str | None = None,
    ) -> Pool:
        """This pool with ``candidates`` and ``spend`` added; with ``step``, ``spend`` is
        also entered in the ledger under that key (what a workflow step cost)."""
        update: dict[str, object] = {
            "candidates": tuple(candidates),
            "spend": self.spend + spend if spend is not None else self.spend,
        }
        if step is not None:
            update["ledger"] = {**self.ledger, step: spend if spend is not None else Spend()}
        return self.model_copy(update=update)

    def _repr_html_(self) -> str:
        """A notebook's view: the query, the final answer, the vote's tally, the spend and
        a table of the candidates (answer, scores, verdicts, critiques, errors)."""
        return pool_html(self)

    def noted(self, note: str) -> Pool:
        return self.model_copy(update={"notes": (*self.notes, note)})

    def answers(self) -> list[str | None]:
        return [c.answer for c in self.candidates]


def merge_pools(pools: Sequence[Pool]) -> Pool:
    """One pool from several that grew from a common one (parallel components or branches).

    Candidates are united by id, in order of first appearance; when several pools hold the
    same candidate their scores, verdicts and critiques are combined. Spend is exact: the
    ledgers of the steps each pool went through are united and summed (shared history
    counts once). Notes are united in order; ``final`` is the last one set.
    """
    if not pools:
        raise ValueError("merge_pools needs at least one pool")
    if len(pools) == 1:
        return pools[0]
    by_id: dict[str, Candidate] = {}
    for p in pools:
        for c in p.candidates:
            old = by_id.get(c.id)
            if old is None:
                by_id[c.id] = c
                continue
            by_id[c.id] = old.model_copy(
                update={
                    "scores": {**old.scores, **c.scores},
                    "verdicts": {**old.verdicts, **c.verdicts},
                    "critiques": old.critiques
                    + tuple(x for x in c.critiques if x not in old.critiques),
                    "error": old.error or c.error,
                }
            )
    ledger: dict[str, Spend] = {}
    for p in pools:
        ledger.update(p.ledger)
    first = pools[0]
    unledgered = first.spend - sum(first.ledger.values(), Spend())
    notes: list[str] = []
    for p in pools:
        notes += [n for n in p.notes if n not in notes]
    finals = [p.final for p in pools if p.final is not None]
    votes = [p.vote for p in pools if p.vote is not None]
    return first.model_copy(
        update={
            "candidates": tuple(by_id.values()),
            "ledger": ledger,
            "spend": unledgered + sum(ledger.values(), Spend()),
            "notes": tuple(notes),
            "final": finals[-1] if finals else None,
            "vote": votes[-1] if votes else None,
            "tests": next((p.tests for p in pools if p.tests), ()),
        }
    )


def _e(value: object) -> str:
    return html.escape(str(value))


def pool_html(pool: Pool, limit: int = 50) -> str:
    """HTML for a pool (Jupyter's ``_repr_html_``): escaped, at most ``limit`` candidates."""
    sp = pool.spend
    parts = [
        "<div class='ponder-pool'>",
        f"<p><b>Query</b>: {_e(pool.query)}</p>",
        f"<p><b>Final answer</b>: <code>{_e(pool.final)}</code></p>",
        f"<p><b>Spend</b>: {sp.prompt_tokens + sp.completion_tokens} tokens "
        f"({sp.cached_tokens} cached), {sp.requests} requests, ${sp.cost:.4f}"
        f"{f' (saved ${sp.saved_cost:.4f})' if sp.saved_cost else ''}</p>",
    ]
    if pool.vote is not None:
        v = pool.vote
        tally = ", ".join(
            f"{_e(k)}: {w:g}" for k, w in sorted(v.tally.items(), key=lambda kv: -kv[1])
        )
        parts.append(
            f"<p><b>Vote</b>: {_e(v.answer)} with {v.support:.0%} of {v.counted} "
            f"({v.abstained} abstained); tally {tally}</p>"
        )
    rows = []
    for c in pool.candidates[:limit]:
        scores = ", ".join(f"{_e(k)}={val:.3g}" for k, val in c.scores.items() if val is not None)
        verdicts = ", ".join(f"{_e(k)}={_e(val)}" for k, val in c.verdicts.items())
        text = c.text if len(c.text) <= 300 else c.text[:300] + "…"
        chosen = (
            " style='font-weight:bold'" if pool.final is not None and c.answer == pool.final else ""
        )
        rows.append(
            f"<tr{chosen}><td>{_e(c.id)}</td><td><code>{_e(c.answer)}</code></td>"
            f"<td>{scores}</td><td>{verdicts}</td><td>{_e('; '.join(c.critiques))}</td>"
            f"<td>{_e(c.error or '')}</td><td><details><summary>text</summary>"
            f"<pre>{_e(text)}</pre></details></td></tr>"
        )
    more = len(pool.candidates) - limit
    parts.append(
        "<table><thead><tr><th>candidate</th><th>answer</th><th>scores</th><th>verdicts</th>"
        "<th>critiques</th><th>error</th><th></th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + (f"<p>… and {more} more candidates</p>" if more > 0 else "")
    )
    if pool.notes:
        parts.append("<p><b>Notes</b>: " + "; ".join(_e(n) for n in pool.notes) + "</p>")
    parts.append("</div>")
    return "".join(parts)
