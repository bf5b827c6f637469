"""Unit-test generation and evaluation for coding tasks (run in :mod:`ponder.tools`).

``WriteTests`` asks a model for tests of the query and keeps each top-level statement of
the code it writes as one test. ``RunTests`` runs every candidate's code against the
pool's tests in the sandbox, one process per candidate, and scores it by pass rate.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import secrets
from typing import ClassVar

from pydantic import Field

from ponder.agents._answers import extract_answer
from ponder.agents._components import JudgeConfig, _Config, _messages, _spend, register_component
from ponder.agents._state import Candidate, Pool, Spend
from ponder.backends import Model
from ponder.tools import SandboxLimits, run_python

__all__ = ["RunTests", "RunTestsConfig", "WriteTests", "WriteTestsConfig", "split_tests"]

TEST_WRITER_SYSTEM = (
    "You write unit tests. Given a coding task, write Python assert statements that a "
    "correct solution passes, in one ```python code block. No explanations."
)


def split_tests(code: str, limit: int = 50) -> tuple[list[str], str | None]:
    """Top-level statements of ``code`` as separate tests (imports go first into each).

    Returns ``(tests, error)``; ``error`` says why nothing could be used.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return [], f"the tests do not parse: {e.msg} (line {e.lineno})"
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    prelude = "\n".join(imports)
    tests = [
        (prelude + "\n" if prelude else "") + ast.unparse(n)
        for n in tree.body
        if not isinstance(n, ast.Import | ast.ImportFrom)
    ]
    if not tests:
        return [], "the model wrote no test statements"
    return tests[:limit], None


class WriteTestsConfig(JudgeConfig):
    max_tests: int = Field(20, ge=1)
    samples: int = Field(1, ge=1, description="Test-writing calls; their tests are pooled.")


@register_component
class WriteTests:
    """A model writes unit tests for the query; they go to ``pool.tests``."""

    name: ClassVar[str] = "write_tests"

    def __init__(self, model: Model, config: WriteTestsConfig | None = None):
        self.model = model
        self.config = config or WriteTestsConfig()

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        out = await self.model.generate(
            _messages(cfg.system or TEST_WRITER_SYSTEM, f"Task: {pool.query}"),
            n=cfg.samples,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
        )
        tests: list[str] = []
        problems: list[str] = []
        for text in out.texts:
            code = extract_answer(text, "code") or text
            found, error = split_tests(code, cfg.max_tests)
            if error:
                problems.append(error)
            tests += [t for t in found if t not in tests]
        result = pool.model_copy(update={"tests": tuple(tests[: cfg.max_tests])})
        result = result.with_candidates(result.candidates, _spend(out))
        for p in problems:
            result = result.noted(f"write_tests: {p}")
        return result


_HARNESS = """
import json, sys
MARK = {mark!r}
TESTS = json.loads({tests!r})
ns = {{"__name__": "solution"}}
try:
    with open("solution.py", encoding="utf-8") as f:
        exec(compile(f.read(), "solution.py", "exec"), ns)
except BaseException as e:
    print(MARK + json.dumps({{"load_error": repr(e)[:500]}}), flush=True)
    sys.exit(0)
results = []
for t in TESTS:
    try:
        exec(compile(t, "test", "exec"), dict(ns))
        results.append(None)
    except BaseException as e:
        results.append(type(e).__name__ + ": " + str(e)[:300])
print(MARK + json.dumps({{"results": results}}), flush=True)
"""


class RunTestsConfig(_Config):
    limits: SandboxLimits = Field(default_factory=lambda: SandboxLimits(timeout=10))
    parallel: int = Field(0, ge=0, description="Sandboxes at once (0: the number of CPUs).")
    score_name: str = "tests"


@register_component
class RunTests:
    """Run each candidate's code against ``pool.tests``; score = share of tests passed.

    A candidate that does not load, loops, or exceeds a limit scores 0 with the reason
    in ``error``; a test that fails records its exception. Never raises for bad code.
    """

    name: ClassVar[str] = "run_tests"

    def __init__(self, config: RunTestsConfig | None = None):
        self.config = config or RunTestsConfig()

    async def run_one(
        self, code: str, tests: list[str]
    ) -> tuple[float, str | None, list[str | None]]:
        """(pass rate, reason it could not run, per-test failure or None)."""
        mark = f"PONDER-{secrets.token_hex(8)} "
        harness = _HARNESS.format(mark=mark, tests=json.dumps(tests))
        r = await run_python(harness, files={"solution.py": code}, limits=self.config.limits)
        line = next((ln for ln in reversed(r.stdout.splitlines()) if ln.startswith(mark)), None)
        if line is None:
            why = r.killed_reason or (r.stderr.strip().splitlines() or ["no result"])[-1]
            return 0.0, f"the tests did not finish: {why}", [why] * len(tests)
        data = json.loads(line[len(mark) :])
        if "load_error" in data:
            return (
                0.0,
                f"the code does not load: {data['load_error']}",
                [data["load_error"]] * len(tests),
            )
        results: list[str | None] = data["results"]
        return sum(x is None for x in results) / max(1, len(results)), None, results

    async def __call__(self, pool: Pool) -> Pool:
        name = self.config.score_name
        if not pool.tests:
            return pool.noted("run_tests: the pool has no tests")
        gate = asyncio.Semaphore(self.config.parallel or os.cpu_count() or 1)

        async def one(c: Candidate) -> Candidate:
            code = c.answer if c.answer is not None else extract_answer(c.text, "code")
            if not code:
                return c.scored(name, 0.0).judged(name, None, "no code to test")
            async with gate:
                rate, why, _ = await self.run_one(code, list(pool.tests))
            judged = c.scored(name, rate).judged(name, rate == 1.0)
            return judged.model_copy(update={"error": why}) if why else judged

        cands = await asyncio.gather(*(one(c) for c in pool.candidates))
        return pool.with_candidates(list(cands), Spend())
