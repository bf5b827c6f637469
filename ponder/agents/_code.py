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
import re
from typing import ClassVar, Literal

from pydantic import Field

from ponder.agents._answers import extract_answer
from ponder.agents._base import (
    ModelStep,
    _ask,
    _Config,
    _messages,
    _spend,
    register_component,
)
from ponder.agents._judges import FilterConfig, JudgeConfig, check_in_order
from ponder.agents._state import Candidate, Pool, Spend
from ponder.tools import SandboxLimits, run_checked

__all__ = [
    "ExecutionVote",
    "ExecutionVoteConfig",
    "RunTests",
    "RunTestsConfig",
    "WriteTests",
    "WriteTestsConfig",
    "probes_from_tests",
    "split_tests",
]

TEST_WRITER_SYSTEM = (
    "You write unit tests. Given a coding task, write Python assert statements that a "
    "correct solution passes, in one ```python code block. No explanations."
)
NATURAL_TEST_WRITER_SYSTEM = (
    "You write unit tests in plain language. Given a task, write short checkable statements "
    "that a correct answer satisfies, one per line, each starting with '- '. No explanations."
)
TEST_JUDGE_SYSTEM = (
    "You are a test judge. Decide for each unit test whether the proposed answer passes it. "
    "Reply with one line per test, 'Test k: pass' or 'Test k: fail', and nothing else."
)
_JUDGED = re.compile(
    r"test\s*(\d+)\s*[:\-]\s*\**\s*(pass(?:es|ed)?|fail(?:s|ed)?|yes|no)\b", re.IGNORECASE
)


def natural_tests(text: str, limit: int = 50) -> list[str]:
    """Plain-language tests from a reply: one per non-empty line, bullets and numbers
    stripped."""
    tests: list[str] = []
    for line in text.splitlines():
        t = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip()
        if t and not t.startswith("```") and t not in tests:
            tests.append(t)
    return tests[:limit]


def parse_test_verdicts(text: str, count: int) -> dict[int, bool]:
    """``{test index (0-based): passed}`` from 'Test k: pass|fail' lines."""
    out: dict[int, bool] = {}
    for m in _JUDGED.finditer(text):
        k = int(m.group(1)) - 1
        if 0 <= k < count:
            out.setdefault(k, m.group(2).lower().startswith(("pass", "yes")))
    return out


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
    kind: Literal["code", "natural"] = Field(
        "code",
        description="'code': Python asserts run by run_tests in the sandbox; 'natural': "
        "plain-language statements judged by a model (judge_tests), as in Archon.",
    )


@register_component(config=WriteTestsConfig)
class WriteTests(ModelStep[WriteTestsConfig]):
    """A model writes unit tests for the query; they go to ``pool.tests``."""

    name: ClassVar[str] = "write_tests"

    async def __call__(self, pool: Pool) -> Pool:
        cfg = self.config
        default = TEST_WRITER_SYSTEM if cfg.kind == "code" else NATURAL_TEST_WRITER_SYSTEM
        out = await _ask(
            self.model, cfg, _messages(cfg.system or default, f"Task: {pool.query}"), n=cfg.samples
        )
        tests: list[str] = []
        problems: list[str] = []
        for text in out.texts:
            if cfg.kind == "natural":
                tests += [t for t in natural_tests(text, cfg.max_tests) if t not in tests]
                continue
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


class JudgeTestsConfig(JudgeConfig, FilterConfig):
    score_name: str = "tests"
    top_k: int | None = Field(
        None,
        ge=1,
        description="Order candidates by the share of tests passed (stable) and keep the "
        "best k (Archon's unit-test evaluator top_k).",
    )
    strip_tests_from_query: bool = Field(
        False,
        description="Judge against the query without a trailing 'Your response should pass "
        "the following unit tests:' section (Archon's remove_unit_tests_from_prompt).",
    )


_TESTS_IN_QUERY = "Your response should pass the following unit tests:"


@register_component(config=JudgeTestsConfig)
class JudgeTests(ModelStep[JudgeTestsConfig]):
    """Archon's unit-test evaluator: a model judges, for each candidate, whether it passes
    each of the pool's tests (plain-language ones, such as "The answer mentions X").
    ``scores[score_name]`` is the share of tests passed; ``verdicts[score_name]`` is True
    when every test passed. For code, ``run_tests`` executes the tests instead."""

    name: ClassVar[str] = "judge_tests"

    async def _judge(self, pool: Pool, c: Candidate, index: int) -> tuple[Candidate, Spend]:
        cfg = self.config
        listing = "\n".join(f"Test {i + 1}: {t}" for i, t in enumerate(pool.tests))
        answer = f"\n\nProposed answer: \\boxed{{{c.answer}}}" if c.answer is not None else ""
        query = pool.query
        if cfg.strip_tests_from_query:
            query = query.split(_TESTS_IN_QUERY)[0].strip()
        out = await _ask(
            self.model,
            cfg,
            _messages(
                cfg.system or TEST_JUDGE_SYSTEM,
                f"Problem: {query}\n\nProposed solution:\n{c.text.strip()}{answer}"
                f"\n\nUnit tests:\n{listing}",
            ),
            seed_offset=1000 * index,
        )
        found = parse_test_verdicts(out.text, len(pool.tests))
        if not found:
            return c.judged(cfg.score_name, None, "the test judge gave no verdicts"), _spend(out)
        passed = sum(found.values())
        judged = c.scored(cfg.score_name, passed / len(pool.tests))
        return judged.judged(cfg.score_name, passed == len(pool.tests)), _spend(out)

    async def __call__(self, pool: Pool) -> Pool:
        if not pool.tests:
            return pool.noted("judge_tests: no tests to judge (write_tests first)")
        cfg = self.config
        out = await check_in_order(
            pool, lambda c, i: self._judge(pool, c, i), cfg, cfg.score_name, self.name
        )
        if cfg.top_k is None:
            return out
        best = sorted(out.candidates, key=lambda c: -(c.scores.get(cfg.score_name) or 0.0))
        return out.model_copy(update={"candidates": tuple(best[: cfg.top_k])})


class RunTestsConfig(_Config):
    limits: SandboxLimits = Field(default_factory=lambda: SandboxLimits(timeout=10))
    parallel: int = Field(0, ge=0, description="Sandboxes at once (0: the number of CPUs).")
    score_name: str = "tests"


@register_component(config=RunTestsConfig, models="none")
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
        # the tests run in a sandbox of their own, apart from the code (run_checked): the
        # code cannot read a marker or end the run early to forge its pass rate
        run = await run_checked(code, tests, self.config.limits)
        return run.rate, run.error, run.results

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


class ExecutionVoteConfig(_Config):
    probes: tuple[str, ...] = Field(
        (), description="Expressions to evaluate (default: the left sides of the pool's tests)."
    )
    limits: SandboxLimits = Field(default_factory=lambda: SandboxLimits(timeout=10))
    parallel: int = Field(0, ge=0)


def probes_from_tests(tests: tuple[str, ...] | list[str]) -> list[str]:
    """``f(3)`` from ``assert f(3) == 9``: the expressions whose values the tests check."""
    out: list[str] = []
    for t in tests:
        try:
            tree = ast.parse(t)
        except SyntaxError:
            continue
        for node in tree.body:
            if (
                isinstance(node, ast.Assert)
                and isinstance(node.test, ast.Compare)
                and len(node.test.ops) == 1
                and isinstance(node.test.ops[0], ast.Eq)
            ):
                expr = ast.unparse(node.test.left)
                if expr not in out:
                    out.append(expr)
    return out


@register_component(config=ExecutionVoteConfig, models="none")
class ExecutionVote:
    """Vote over code by behaviour: run every candidate on the same probe inputs and group
    candidates whose outputs agree (AlphaCode-style clustering); the largest group wins.

    Two programs written differently but computing the same thing vote together. A
    candidate that does not load or run abstains. ``pool.final`` is the code of the first
    candidate of the winning group.
    """

    name: ClassVar[str] = "execution_vote"

    def __init__(self, config: ExecutionVoteConfig | None = None):
        self.config = config or ExecutionVoteConfig()

    async def behaviour(self, code: str, probes: list[str]) -> str | None:
        """A key for what ``code`` computes on ``probes`` (None if it does not run)."""
        run = await run_checked(code, probes, self.config.limits, probes=True)
        if run.error is not None and not any(v is not None for v in run.values):
            return None  # it does not load or run: abstain
        keys = [v if v is not None else "raises " + (r or "").split(":")[0]
                for v, r in zip(run.values, run.results, strict=True)]  # fmt: skip
        return json.dumps(keys)

    async def __call__(self, pool: Pool) -> Pool:
        probes = list(self.config.probes) or probes_from_tests(pool.tests)
        if not probes:
            return pool.noted("execution_vote: no probes (give probes or tests)")
        gate = asyncio.Semaphore(self.config.parallel or os.cpu_count() or 1)

        async def key(c: Candidate) -> str | None:
            code = c.answer if c.answer is not None else extract_answer(c.text, "code")
            if not code:
                return None
            async with gate:
                return await self.behaviour(code, probes)

        keys = await asyncio.gather(*(key(c) for c in pool.candidates))
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k is not None:
                groups.setdefault(k, []).append(i)
        if not groups:
            return pool.noted("execution_vote: no candidate ran")
        best = max(groups.values(), key=lambda g: (len(g), -g[0]))
        share = len(best) / len(pool.candidates)
        cands = [
            c.scored("behaviour_share", len(groups.get(k, [])) / len(pool.candidates))
            if k is not None
            else c.scored("behaviour_share", 0.0)
            for c, k in zip(pool.candidates, keys, strict=True)
        ]
        final = pool.candidates[best[0]].answer
        out = pool.with_candidates(cands).model_copy(update={"final": final})
        return out.noted(
            f"execution_vote: {len(groups)} behaviours; the winner has {share:.0%} of the votes"
        )
