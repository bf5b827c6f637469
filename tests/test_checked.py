"""Scores the code under test cannot forge: tests run in a sandbox apart from the code
(ponder.tools.run_checked), for RunTests, the eval CodeScorer and the execution vote."""

from __future__ import annotations

import pytest
from conftest import processes_with

from ponder.agents import Candidate, ExecutionVote, Pool, Provenance, RunTests
from ponder.eval._datasets import CodeScorer, Item
from ponder.tools import SandboxLimits, run_checked

LIM = SandboxLimits(timeout=20)
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
WRONG = "def add(a, b):\n    return a * b\n"  # passes only the last test

# what code under test tried against in-process harnesses, all at once
FORGERIES = {
    "marker": (
        "import sys, json\n"
        "for f in (sys._getframe(i) for i in range(1, 4)):\n"
        "    mark = f.f_globals.get('MARK')\n"
        "    if mark:\n"
        "        print(mark + json.dumps({'results': [None] * 3}), flush=True)\n"
        "        raise SystemExit(0)\n"
    ),
    "exit": "import os\nos._exit(0)\n",
    "channel": (
        "import os\n"
        "for fd in range(1, 12):\n"
        "    try:\n"
        '        os.write(fd, b\'{"test": 0, "result": null}\\n{"done": 3}\\n\')\n'
        '        os.write(fd, b\'{"id": 1, "value": {"i": "3"}}\\n\')\n'
        "    except OSError:\n"
        "        pass\n"
    ),
}


pytestmark = pytest.mark.usefixtures("os_sandbox")


async def test_right_code_passes_and_wrong_code_fails_each_test() -> None:
    right = await run_checked("def add(a, b):\n    return a + b\n", TESTS, LIM)
    assert (right.results, right.error) == ([None, None, None], None)
    wrong = await run_checked(WRONG, TESTS, LIM)
    assert wrong.results[2] is None
    assert wrong.passed == 1
    assert all(r.startswith("AssertionError") for r in wrong.results[:2] if r is not None)


async def test_values_and_exceptions_cross_as_data() -> None:
    code = (
        "def f(x):\n"
        "    if x < 0:\n"
        "        raise ValueError('negative')\n"
        "    return {'x': [x, (x, x + 0.5)], 's': {x}, 'b': b'ab', 'n': None}\n"
    )
    tests = [
        "assert f(1) == {'x': [1, (1, 1.5)], 's': {1}, 'b': b'ab', 'n': None}",
        "try:\n    f(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"
        "else:\n    raise AssertionError('no error')",
        "assert f(2) == 3",
    ]
    run = await run_checked(code, tests, LIM)
    assert run.results[:2] == [None, None]
    assert run.results[2] is not None
    assert run.results[2].startswith("AssertionError")


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
async def test_a_forging_solution_scores_what_it_scores_without_the_forgery(
    forgery: str,
) -> None:
    honest = await RunTests().run_one(WRONG, TESTS)
    forged = await RunTests().run_one(WRONG + FORGERIES[forgery], TESTS)
    assert honest[0] == pytest.approx(1 / 3)
    assert forged[0] <= honest[0]  # never more: the forgery can only break its own calls


async def test_code_that_never_answers_fails_within_the_timeout() -> None:
    run = await run_checked(
        "def add(a, b):\n    while True:\n        pass\n", TESTS, SandboxLimits(timeout=3)
    )
    assert run.rate == 0.0
    assert run.error is not None
    assert "did not finish" in run.error


async def test_code_that_does_not_load_fails_every_test_with_the_reason() -> None:
    run = await run_checked("def add(a, b) return a\n", TESTS, LIM)
    assert run.rate == 0.0
    assert run.error is not None
    assert "does not load" in run.error
    assert run.results == [run.error] * 3


def test_the_code_scorer_is_not_fooled_by_an_early_exit() -> None:
    item = Item(
        id="t0",
        question="add",
        answer="",
        meta={
            "prompt": "def add(a, b):\n",
            "entry_point": "add",
            "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        },
    )
    scorer = CodeScorer()
    assert scorer(item, None, "```python\ndef add(a, b):\n    return a + b\n```")
    assert not scorer(item, None, "```python\ndef add(a, b):\n    return a - b\n```")
    cheat = "```python\nimport os\nos._exit(0)\ndef add(a, b):\n    return a - b\n```"
    assert not scorer(item, None, cheat)


async def test_the_execution_vote_groups_by_behaviour_and_cannot_be_joined_by_printing() -> None:
    a = "def add(a, b):\n    return a + b\n"
    b = "def add(a, b):\n    return sum([a, b])\n"
    c = WRONG
    d = WRONG + FORGERIES["channel"]
    pool = Pool(query="add", tests=tuple(TESTS)).with_candidates(
        [
            Candidate(id=str(i), text=t, answer=t, provenance=Provenance(component="test"))
            for i, t in enumerate((a, b, c, d))
        ]
    )
    out = await ExecutionVote()(pool)
    assert out.final == a
    shares = [cand.scores["behaviour_share"] for cand in out.candidates]
    # the forger broke its own channel: it abstains rather than joining a group
    assert shares == [0.5, 0.5, 0.25, 0.0]


async def test_nothing_of_a_timed_out_check_outlives_it() -> None:
    """Both sandboxes are killed whole when the exchange times out (as root, through the
    run's cgroup as well as bubblewrap's die-with-parent)."""
    import asyncio
    import secrets

    token = f"ponder-checked-{secrets.token_hex(6)}"
    spin = f"import time\nwhile True:\n    time.sleep(0.05)  # {token}\n"
    run = await run_checked(
        # the audit hook off first (its globals are a few frames up), as an attacker would
        "import subprocess, sys\n"
        "f = sys._getframe(0)\n"
        "while f is not None and '_DENY' not in f.f_globals:\n"
        "    f = f.f_back\n"
        "f.f_globals['_DENY'].clear()\n"
        f"subprocess.Popen([sys.executable, '-c', {spin!r}], start_new_session=True)\n"
        "while True:\n    pass\n",
        ["assert f(1) == 2"],
        SandboxLimits(timeout=3, cpu_seconds=10),
    )
    assert run.error is not None
    assert "did not finish" in run.error  # it loaded, spawned, and spun to the timeout
    for _ in range(50):
        if not await asyncio.to_thread(processes_with, token):
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(processes_with, token) == []
