"""The quickstart's main job: sample several answers per question, vote, then fuse.

Two layers over one model: a generator layer (``n`` samples per question, in parallel) and
a fuser layer (one call that sees the question and the voted candidates and writes the
final answer). With no model given it runs on the embedded ``local:smollm2``.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ponder.backends import Model
from ponder.testing.oracle import ProblemBank, extract_boxed
from ponder.types import Message

__all__ = ["DemoQuestion", "DemoRow", "bundled_questions", "oracle_questions", "run_demo"]

_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class DemoQuestion:
    """A question, its reference answer, and how to pull an answer out of a reply."""

    text: str
    truth: str
    extract: Callable[[str], str | None]

    def is_correct(self, answer: str | None) -> bool:
        return answer is not None and answer.lower() == self.truth.lower()


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        words = _WORD.findall(text.lower())
        hits = [w for w in words if w in choices]
        return hits[-1] if hits else None

    return extract


def bundled_questions() -> list[DemoQuestion]:
    """Easy questions a 135M model gets right some of the time (so votes matter)."""
    colours = ("blue", "green", "red", "yellow", "white", "black", "grey", "gray", "orange")
    return [
        DemoQuestion("What is 2 + 3?", "5", _last_number),
        DemoQuestion("What is the capital of France?", "paris", _one_of("paris", "lyon", "nice")),
        DemoQuestion("How many days are there in a week?", "7", _last_number),
        DemoQuestion("What colour is the sky on a clear day?", "blue", _one_of(*colours)),
    ]


def oracle_questions(count: int) -> list[DemoQuestion]:
    """Arithmetic problems of the stand-in server's oracle (answers in ``\\boxed{}``)."""
    bank = ProblemBank(0)
    return [
        DemoQuestion(p.question, p.answer, extract_boxed)
        for p in (bank.problem(i) for i in bank.ids("arithmetic", count))
    ]


@dataclass
class DemoRow:
    question: DemoQuestion
    votes: Counter[str] = field(default_factory=Counter)
    voted: str | None = None
    fused: str | None = None
    fused_text: str = ""


SYSTEM = "Answer the question briefly. End with the final answer."
FUSER = (
    "You fuse candidate answers. Read the question and the candidates, then state the single "
    "best final answer briefly."
)


async def run_demo(
    model: Model,
    questions: list[DemoQuestion],
    *,
    samples: int,
    seed: int,
    max_tokens: int,
    console: Console,
) -> list[DemoRow]:
    """Generate ``samples`` answers per question, vote, fuse; with live progress."""
    rows = [DemoRow(q) for q in questions]
    with Progress(
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tokens]} tokens"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        gen = progress.add_task("sample", total=len(rows) * samples, tokens=0)
        fuse = progress.add_task("fuse", total=len(rows), tokens=0)

        async def one(row: DemoRow) -> None:
            q = row.question
            # samples stream in one by one so the bar moves with the model
            c = await model.generate(
                [Message.system(SYSTEM), Message.user(q.text)],
                n=samples,
                temperature=0.7,
                seed=seed,
                max_tokens=max_tokens,
            )
            progress.update(gen, advance=samples, tokens=model.meter.usage.total_tokens)
            row.votes = Counter(a for a in (q.extract(t) for t in c.texts) if a is not None)
            row.voted = row.votes.most_common(1)[0][0] if row.votes else None
            listed = "\n".join(f"Candidate {i + 1}: {t.strip()}" for i, t in enumerate(c.texts))
            f = await model.generate(
                [
                    Message.system(FUSER),
                    Message.user(f"Question: {q.text}\n{listed}\nFinal answer:"),
                ],
                temperature=0,
                max_tokens=max_tokens,
            )
            row.fused_text = f.text.strip()
            row.fused = q.extract(f.text)
            progress.update(fuse, advance=1, tokens=model.meter.usage.total_tokens)

        async with asyncio.TaskGroup() as tg:
            for row in rows:
                tg.create_task(one(row))
    return rows


def render(rows: list[DemoRow], samples: int, console: Console) -> None:
    """Print the table and the accuracies of one sample, the vote and the fuser."""
    table = Table(title=f"vote over {samples} samples, then fuse")
    for col in ("question", "truth", "votes", "voted", "fused", "fuser said"):
        table.add_column(col, overflow="fold")
    for r in rows:
        q = r.question
        mark = {True: "[green]✓[/green]", False: "[red]✗[/red]"}
        table.add_row(
            q.text,
            q.truth,
            ", ".join(f"{a}:{k}" for a, k in r.votes.most_common(3)) or "(none parsed)",
            f"{r.voted or '-'} {mark[q.is_correct(r.voted)]}",
            f"{r.fused or '-'} {mark[q.is_correct(r.fused)]}",
            r.fused_text[:80],
        )
    console.print(table)
    n = len(rows)
    single = sum(r.votes.get(r.question.truth, 0) for r in rows) / max(1, n * samples)
    voted = sum(r.question.is_correct(r.voted) for r in rows)
    fused = sum(r.question.is_correct(r.fused) for r in rows)
    console.print(
        f"one sample right: {single:.0%}   voted: {voted}/{n} right   fused: {fused}/{n} right"
    )
