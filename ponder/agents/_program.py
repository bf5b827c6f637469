"""Program-aided reasoning (PAL): the model writes a program, the sandbox runs it, and
what it prints is the answer.

``program`` samples ``n`` programs and runs each in the OS sandbox (``ponder.tools``); a
candidate's answer is the last line the program printed (a program that ends with a bare
expression prints it, as a notebook shows a cell's value), and a program that fails (an
exception, a timeout, no output) is a candidate with no answer and the reason in its
``error``. ``vote`` after it is an **execution vote**: a plurality over what the programs
printed, the failed ones abstaining.
"""

from __future__ import annotations

import ast
import asyncio
import re
from typing import ClassVar

from pydantic import Field

from ponder.agents._answers import AnswerKind, normalize_answer
from ponder.agents._base import (
    ModelStep,
    _Config,
    _messages,
    _origin,
    _sample_provenance,
    _sampling,
    _spend,
    register_component,
)
from ponder.agents._state import Candidate, Pool
from ponder.errors import ToolExecutionError
from ponder.tools import SandboxLimits, run_python

__all__ = [
    "PROGRAM_SYSTEM",
    "ProgramAided",
    "ProgramConfig",
    "extract_program",
    "print_last_expression",
]

PROGRAM_SYSTEM = (
    "Solve the problem by writing a short Python program that computes the answer and "
    "prints only the final answer (a number, with no units or words). Reply with the "
    "program in one ```python code block and nothing else."
)

_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_program(text: str) -> str | None:
    """The program in a reply: its first fenced code block (an unclosed one, cut by the
    token limit, counts), else the whole reply when it reads as code."""
    m = _BLOCK.search(text)
    if m and m.group(1).strip():
        return m.group(1).strip()
    body = text.strip()
    if re.search(r"^\s*(print\(|def |import |from |\w+\s*=)", body, re.MULTILINE):
        return body
    return None


def print_last_expression(code: str) -> str:
    """``code`` with its last statement printed when it is a bare expression (as a
    notebook shows a cell's value): small models often end with ``total`` or ``2 * 7 + 1``
    instead of ``print(...)``. Code that does not parse is returned as it is (running it
    reports the error)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr):
        return code
    value = last.value
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "print"
    ):
        return code
    tree.body[-1] = ast.Expr(ast.Call(ast.Name("print", ast.Load()), [value], []))
    return ast.unparse(ast.fix_missing_locations(tree))


class ProgramConfig(_Config):
    n: int = Field(8, ge=1, description="Programs sampled.")
    temperature: float | None = 0.7
    max_tokens: int | None = 256
    seed: int | None = 0
    system: str | None = PROGRAM_SYSTEM
    answer_kind: AnswerKind = "number"
    timeout: float = Field(10.0, gt=0, description="Seconds one program may run.")
    concurrency: int = Field(4, ge=1, description="Programs running at once.")
    replace: bool = Field(False, description="Replace the pool's candidates instead of adding.")
    layer: int = 0


@register_component(config=ProgramConfig, models="one")
class ProgramAided(ModelStep[ProgramConfig]):
    """``n`` programs for the pool's query, each run in the sandbox; the printed result
    is the candidate's answer (follow with ``vote`` for an execution vote)."""

    name: ClassVar[str] = "program"

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        system = pool.system if pool.system is not None else cfg.system
        params = _sampling(cfg.n, cfg.temperature, cfg.max_tokens, cfg.seed, False)
        c = await self.model.generate(_messages(system, pool.query), params)
        limits = SandboxLimits(timeout=cfg.timeout, cpu_seconds=max(1, int(cfg.timeout)))
        gate = asyncio.Semaphore(cfg.concurrency)
        prefix = _origin(self.name, cfg, self.model.id, cfg.layer)

        async def one(index: int, text: str, finish: str) -> Candidate:
            prov = _sample_provenance(self.name, self.model, cfg.layer, cfg.seed, index)
            code = extract_program(text)
            if code is not None:
                code = print_last_expression(code)
            base = {"id": prefix + str(index), "provenance": prov, "finish_reason": finish}
            if code is None:
                return Candidate(text=text, error="no program in the reply", **base)
            try:
                async with gate:
                    r = await run_python(code, limits=limits)
            except ToolExecutionError as e:  # the sandbox itself could not run
                return Candidate(text=text, error=f"not run: {e}", **base)
            lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
            shown = f"{text}\n\nOutput:\n{r.stdout[-2000:]}"
            if not r.ok:
                why = r.killed_reason or (r.stderr.strip().splitlines() or ["failed"])[-1]
                return Candidate(text=shown, error=f"the program failed: {why}", **base)
            if not lines:
                return Candidate(text=shown, error="the program printed nothing", **base)
            answer = lines[-1]
            if normalize_answer(answer, cfg.answer_kind) is None:
                return Candidate(text=shown, error=f"not an answer: {answer[:100]!r}", **base)
            return Candidate(text=shown, answer=answer, **base)

        cands = list(
            await asyncio.gather(*(one(ch.index, ch.text, ch.finish_reason) for ch in c.choices))
        )
        ran = sum(c.error is None for c in cands)
        note = f"program: {ran} of {len(cands)} programs ran and printed an answer"
        base_cands = () if cfg.replace else pool.candidates
        out = pool.with_candidates(base_cands + tuple(cands), _spend(c))
        return out.model_copy(update={"notes": (*out.notes, note)})
