"""Dynamic Cheatsheet (Suzgun et al., 2025): a persistent memory of strategies, insights
and code, curated by the model itself.

Variants (``CheatsheetConfig.variant``):

* ``cumulative`` (DC-Cu): answer with the namespace's cheatsheet, then a curator rewrites
  it from the old one, the problem and the answer.
* ``retrieval_synthesis`` (DC-RS): retrieve the past queries most similar to this one,
  let the curator synthesise a cheatsheet for this query from them and the current
  cheatsheet (stored as a new version), then answer with it.
* ``retrieval``: the top-k similar past queries and their answers, no curation.
* ``full_history``: every past query and answer (newest first, within a budget).
* ``none``: no memory (the baseline).

The cheatsheet lives in a :class:`MemoryStore` namespace, so it persists across sessions,
is shared by concurrent workers (updates are compare-and-set, see :func:`update`) and
every version can be inspected and rolled back (``ponder memory``). Past queries and
answers go to an append-only log in the namespace ``<namespace>::log`` (one version per
entry). With ``execute_code=True`` a Python block in an answer (for example a solver
the curator stored) is run in the sandbox and the model gives its final answer from the
output, as in the paper.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.backends import Model
from ponder.memory._retrieval import BM25Retriever, Retriever
from ponder.memory._store import Cheatsheet, MemoryStore, update
from ponder.tools import SandboxLimits, run_python
from ponder.types import Completion, Message, Usage

__all__ = [
    "CheatsheetConfig",
    "CheatsheetResult",
    "DynamicCheatsheet",
    "Experience",
    "ExperienceLog",
    "Prepared",
    "Variant",
    "parse_cheatsheet",
]

Variant = Literal["cumulative", "retrieval_synthesis", "retrieval", "full_history", "none"]

GENERATOR_TEMPLATE = (
    "Solve the problem. A cheatsheet of strategies, insights and code from earlier problems "
    "follows; use what applies. Think step by step, then give the final answer as "
    "\\boxed{{ANSWER}}.\n\n<cheatsheet>\n{cheatsheet}\n</cheatsheet>"
)
CURATOR_TEMPLATE = (
    "You curate a cheatsheet of reusable strategies, insights and code for future problems. "
    "Given the current cheatsheet, a problem and the answer just given, write the improved "
    "cheatsheet: keep entries that help, add what this problem taught (a short Python "
    "function in a ```python block when code would solve such problems), merge duplicates, "
    "drop what is wrong or specific to one problem. Stay under {max_chars} characters. "
    "Reply with the whole cheatsheet between <cheatsheet> and </cheatsheet>."
)
SYNTHESIS_TEMPLATE = (
    "You curate a cheatsheet for the problem that comes next. From the current cheatsheet "
    "and the most similar past problems with the answers given to them, write the "
    "strategies, insights and code most likely to help with the new problem. Stay under "
    "{max_chars} characters. Reply with the whole cheatsheet between <cheatsheet> and "
    "</cheatsheet>."
)
CODE_FOLLOWUP = (
    "Your code printed:\n{output}\n\nGive the final answer as \\boxed{{ANSWER}}, using the "
    "output if it is right."
)
_BLOCK = re.compile(r"<cheatsheet>\s*(.*?)\s*</cheatsheet>", re.DOTALL | re.IGNORECASE)
_PYTHON = re.compile(r"```python\n(.*?)```", re.DOTALL)


def parse_cheatsheet(text: str) -> str | None:
    """The content of the last ``<cheatsheet>...</cheatsheet>`` block, or None."""
    found = _BLOCK.findall(text)
    return found[-1].strip() if found else None


class CheatsheetConfig(BaseModel):
    """How memory is used and curated. Every prompt is a template users can replace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field("default", min_length=1)
    variant: Variant = Field("cumulative", description="See the module docstring.")
    max_chars: int = Field(4000, ge=200, description="Size budget of the cheatsheet.")
    top_k: int = Field(3, ge=1, le=50, description="Past queries retrieved (RS, retrieval).")
    history_chars: int = Field(
        8000, ge=200, description="Budget of past examples in the prompt (full_history)."
    )
    generator_template: str = GENERATOR_TEMPLATE
    curator_template: str = CURATOR_TEMPLATE
    synthesis_template: str = SYNTHESIS_TEMPLATE
    code_followup_template: str = CODE_FOLLOWUP
    execute_code: bool = Field(False, description="Run a ```python block of the answer.")
    code_timeout: float = Field(10.0, gt=0, le=300)
    temperature: float = 0.0
    max_tokens: int | None = None
    seed: int = 0


class Experience(BaseModel):
    """One past query and the answer given to it."""

    model_config = ConfigDict(frozen=True)

    query: str
    answer: str


class CheatsheetResult(BaseModel):
    """An answer, the memory it used, and what curation did."""

    model_config = ConfigDict(frozen=True)

    answer_text: str
    used_version: int = Field(description="Cheatsheet version in the prompt (0: none).")
    curated_version: int | None = Field(description="Version this answer's curation wrote.")
    curation_note: str
    retrieved: tuple[Experience, ...] = ()
    code_output: str | None = Field(None, description="What the answer's code printed.")
    usage: Usage = Field(default_factory=Usage, description="All calls: answer and memory.")
    cost: float = 0.0


class Prepared(BaseModel):
    """What :meth:`DynamicCheatsheet.prepare` puts in front of a question."""

    model_config = ConfigDict(frozen=True)

    system: str
    used_version: int
    retrieved: tuple[Experience, ...] = ()
    note: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost: float = 0.0


class ExperienceLog:
    """Append-only log of (query, answer) in the store namespace ``<namespace>::log``.

    Each entry is one version, so appends from concurrent workers are compare-and-set like
    any cheatsheet update, and the log exports and imports with the store's tools.
    """

    def __init__(self, store: MemoryStore, namespace: str) -> None:
        self.store = store
        self.namespace = f"{namespace}::log"

    async def append(self, query: str, answer: str) -> int:
        entry = Experience(query=query, answer=answer).model_dump_json()

        async def put(_latest: Cheatsheet | None) -> str:
            return entry

        written = await update(self.store, self.namespace, put, note="experience")
        return written.version if written else 0

    async def entries(self) -> list[Experience]:
        out = []
        for c in await self.store.history(self.namespace):
            try:
                out.append(Experience.model_validate(json.loads(c.content)))
            except (ValueError, TypeError):
                continue  # a hand-edited entry that is not an Experience: skip it
        return out


def _examples(items: list[Experience], budget: int) -> str:
    parts: list[str] = []
    used = 0
    for e in items:
        block = f"Q: {e.query}\nA: {e.answer.strip()}"
        if used + len(block) > budget and parts:
            break
        parts.append(block)
        used += len(block) + 2
    return "Past problems and the answers given to them:\n\n" + "\n\n".join(parts)


class DynamicCheatsheet:
    """``await dc.answer(question)``: answer with memory, then curate (see the module).

    A curator reply without a ``<cheatsheet>`` block keeps the previous version (the
    reason is in ``curation_note`` and nothing is written); a cheatsheet over ``max_chars``
    is sent back once for compaction, and if still too long the previous version is kept;
    it is never cut mid-entry. ``prepare`` and ``curate`` are the two halves, for use
    around another pipeline (the workflow ``memory_read`` / ``memory_curate`` steps).
    """

    def __init__(
        self,
        model: Model,
        store: MemoryStore,
        config: CheatsheetConfig | None = None,
        *,
        curator: Model | None = None,
        retriever: Retriever | None = None,
    ) -> None:
        self.model = model
        self.curator = curator or model
        self.store = store
        self.config = config or CheatsheetConfig()
        self.retriever: Retriever = retriever or BM25Retriever()
        self.log = ExperienceLog(store, self.config.namespace)

    # -- before -------------------------------------------------------------------------

    async def prepare(self, question: str) -> Prepared:
        """The system prompt for ``question`` under the configured variant."""
        cfg = self.config
        fmt = cfg.generator_template.format
        if cfg.variant == "none":
            return Prepared(system=fmt(cheatsheet="(empty)"), used_version=0)
        if cfg.variant == "cumulative":
            current = await self.store.latest(cfg.namespace)
            sheet = current.content if current else "(empty)"
            return Prepared(system=fmt(cheatsheet=sheet), used_version=_v(current))
        past = await self.log.entries()
        if cfg.variant == "full_history":
            newest = list(reversed(past))
            text = _examples(newest, cfg.history_chars) if past else "(empty)"
            return Prepared(system=fmt(cheatsheet=text), used_version=0)
        picked = [
            past[i] for i in self.retriever.search(question, [e.query for e in past], cfg.top_k)
        ]
        if cfg.variant == "retrieval":
            text = _examples(picked, cfg.history_chars) if picked else "(empty)"
            return Prepared(system=fmt(cheatsheet=text), used_version=0, retrieved=tuple(picked))
        return await self._synthesise(question, picked)

    async def _synthesise(self, question: str, picked: list[Experience]) -> Prepared:
        cfg = self.config
        notes: list[str] = []
        spent: list[Completion] = []

        async def synth(latest: Cheatsheet | None) -> str | None:
            notes.clear()
            old = latest.content if latest else "(empty)"
            shown = _examples(picked, cfg.history_chars) if picked else "(no similar problems)"
            prompt = (
                f"<cheatsheet>\n{old}\n</cheatsheet>\n\n{shown}\n\nNext problem: {question}\n\n"
                "Write the cheatsheet for it."
            )
            system = cfg.synthesis_template.format(max_chars=cfg.max_chars)
            return await self._curated(system, prompt, notes, spent)

        written = await update(self.store, cfg.namespace, synth, note=f"for: {question[:80]}")
        current = written if written is not None else await self.store.latest(cfg.namespace)
        sheet = current.content if current else "(empty)"
        return Prepared(
            system=cfg.generator_template.format(cheatsheet=sheet),
            used_version=_v(current),
            retrieved=tuple(picked),
            note="; ".join(notes) if notes else "synthesised",
            usage=_usage(spent),
            cost=sum(c.cost for c in spent),
        )

    # -- after --------------------------------------------------------------------------

    async def curate(
        self, question: str, answer: str, spent: list[Completion] | None = None
    ) -> tuple[int | None, str]:
        """Record the answer and, for DC-Cu, rewrite the cheatsheet.

        Returns the version written (or None) and a note saying what happened; the
        curator's completions are appended to ``spent`` when given.
        """
        cfg = self.config
        if cfg.variant == "none":
            return None, "no memory"
        await self.log.append(question, answer)
        if cfg.variant != "cumulative":
            return None, "recorded"
        notes: list[str] = []
        calls = spent if spent is not None else []
        before = await self.store.latest(cfg.namespace)

        async def rewrite(latest: Cheatsheet | None) -> str | None:
            notes.clear()
            old = latest.content if latest else "(empty)"
            prompt = (
                f"<cheatsheet>\n{old}\n</cheatsheet>\n\nProblem: {question}\n\n"
                f"Answer given:\n{answer}\n\nWrite the improved cheatsheet."
            )
            system = cfg.curator_template.format(max_chars=cfg.max_chars)
            return await self._curated(system, prompt, notes, calls)

        written = await update(
            self.store, cfg.namespace, rewrite, note=f"curated after: {question[:80]}"
        )
        changed = written is not None and written.version > _v(before) and not notes
        version = written.version if changed and written else None
        return version, "; ".join(notes) if notes else "updated"

    async def _curated(
        self, system: str, prompt: str, notes: list[str], spent: list[Completion]
    ) -> str | None:
        cfg = self.config
        reply = await self.curator.generate(
            [Message.system(system), Message.user(prompt)],
            temperature=cfg.temperature,
            seed=cfg.seed,
        )
        spent.append(reply)
        new = parse_cheatsheet(reply.text)
        if new is None:
            notes.append("the curator's reply had no <cheatsheet> block; kept the previous version")
            return None
        if len(new) > cfg.max_chars:
            reply = await self.curator.generate(
                [
                    Message.system(system),
                    Message.user(
                        f"This cheatsheet is {len(new)} characters, over the budget of "
                        f"{cfg.max_chars}. Compact it (merge and drop the least useful "
                        f"entries), keeping whole entries.\n\n<cheatsheet>\n{new}\n</cheatsheet>"
                    ),
                ],
                temperature=cfg.temperature,
                seed=cfg.seed,
            )
            spent.append(reply)
            compact = parse_cheatsheet(reply.text)
            if compact is None or len(compact) > cfg.max_chars:
                notes.append(
                    f"the cheatsheet stayed over {cfg.max_chars} characters after compaction; "
                    "kept the previous version"
                )
                return None
            new = compact
        return new

    # -- the loop -----------------------------------------------------------------------

    async def answer(self, question: str) -> CheatsheetResult:
        """Answer ``question`` with memory, run its code if configured, then curate."""
        cfg = self.config
        prep = await self.prepare(question)
        messages = [Message.system(prep.system), Message.user(question)]
        out = await self.model.generate(
            messages, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed
        )
        spent = [out]
        text, printed = out.text, None
        blocks = _PYTHON.findall(text) if cfg.execute_code else []
        if blocks:
            run = await run_python(blocks[-1], limits=SandboxLimits(timeout=cfg.code_timeout))
            printed = (run.stdout + (run.stderr if not run.ok else "")).strip()[:4000]
            if run.killed_reason:
                printed += f"\n(stopped: {run.killed_reason})"
            follow = await self.model.generate(
                [
                    *messages,
                    Message.assistant(text),
                    Message.user(cfg.code_followup_template.format(output=printed or "(nothing)")),
                ],
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                seed=cfg.seed,
            )
            spent.append(follow)
            text = f"{text}\n\nCode output:\n{printed}\n\n{follow.text}"
        version, note = await self.curate(question, text, spent)
        return CheatsheetResult(
            answer_text=text,
            used_version=prep.used_version,
            curated_version=version,
            curation_note=prep.note + ("; " if prep.note else "") + note,
            retrieved=prep.retrieved,
            code_output=printed,
            usage=prep.usage + _usage(spent),
            cost=prep.cost + sum(c.cost for c in spent),
        )


def _v(c: Cheatsheet | None) -> int:
    return c.version if c else 0


def _usage(calls: list[Completion]) -> Usage:
    return sum((c.usage for c in calls), Usage())
