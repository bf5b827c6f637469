"""The stand-in server's oracle: a seeded bank of problems with known answers, and
role-aware simulated models whose correctness is drawn with known probabilities.

Protocol (what a prompt must contain for the oracle to act on it)
-----------------------------------------------------------------
* A problem is named by the tag ``Problem <id>:`` anywhere in the user messages. The bank
  is a pure function of ``(bank seed, id)``: ``ProblemBank(seed).problem(id)`` gives the
  question text (which already starts with the tag) and the true answer.
* The role is read from the system message (first match, case-insensitive):
  ``verif`` → verifier, ``critic``/``critique`` → critic, ``rank`` → ranker,
  ``fuse``/``synthesi``/``aggregat`` → fuser, ``step scor``/``process reward`` → step scorer,
  ``unit test`` → test writer, ``test judge`` → test judge (``Test k: pass|fail`` per
  listed test, pass drawn like a verifier's yes); anything else → generator.
* Candidate answers in a prompt are read from ``\\boxed{...}``; candidates listed for a
  ranker/critic/fuser are split on lines starting ``Candidate <k>:`` (or ``[k]``).
* Generators end with ``The answer is \\boxed{X}.``; verifiers with ``Verdict: yes|no``;
  rankers with ``Ranking: [2] > [1] > [3]``; step scorers with ``Step scores: 0.91, 0.12``;
  critics give one ``Candidate k: ...`` line per candidate.

Probabilities: a generator named ``m`` is right with ``accuracy[m]`` (default
``default_accuracy``); a wrong answer is one of ``distractors`` wrong values, uniformly. The
verifier says yes to a right answer with ``verifier_tpr`` and to a wrong one with
``verifier_fpr``. Everything is drawn from ``random.Random`` seeded by the request, so the
same request with the same seed gives the same text. :func:`majority_vote_accuracy`
computes the exact accuracy of plurality voting under this model.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import re
from typing import Any, Literal

from ponder._internal.game24 import check_24
from ponder.testing._bank import (
    OracleConfig,
    Problem,
    ProblemBank,
    normalize,
    rng_for,
    solve24_expression,
)
from ponder.testing._solve24 import solve24

__all__ = [
    "OracleConfig",
    "Problem",
    "ProblemBank",
    "Role",
    "detect_role",
    "extract_boxed",
    "majority_vote_accuracy",
    "normalize",
    "problem_expression",
    "respond",
    "schema_reply",
    "solve24_expression",
    "tool_reply",
]

Role = Literal[
    "generator",
    "verifier",
    "critic",
    "ranker",
    "fuser",
    "step_scorer",
    "test_writer",
    "test_judge",
    "curator",
]

_TAG = re.compile(r"Problem (\d+):")
_GAME24 = re.compile(r"Game of 24: (\d+) (\d+) (\d+) (\d+)")
_SHEET = re.compile(r"<cheatsheet>\s*(.*?)\s*</cheatsheet>", re.DOTALL)
_CODE_OUTPUT = "Your code printed:"
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_CANDIDATE = re.compile(r"^(?:Candidate\s*(\d+)\s*:|\[(\d+)\])", re.MULTILINE)


def detect_role(system: str) -> Role:
    s = system.lower()
    for needle, role in (
        ("curat", "curator"),
        ("test judge", "test_judge"),
        ("verif", "verifier"),
        ("step scor", "step_scorer"),
        ("process reward", "step_scorer"),
        ("unit test", "test_writer"),
        ("critic", "critic"),
        ("critique", "critic"),
        ("rank", "ranker"),
        ("fuse", "fuser"),
        ("synthesi", "fuser"),
        ("aggregat", "fuser"),
    ):
        if needle in s:
            return role  # type: ignore[return-value]
    return "generator"


def extract_boxed(text: str | None) -> str | None:
    """The last ``\\boxed{...}`` content in ``text``."""
    if not text:
        return None
    found = _BOXED.findall(text)
    return found[-1].strip() if found else None


def _candidates(text: str) -> list[str]:
    marks = list(_CANDIDATE.finditer(text))
    return [
        text[m.start() : (marks[i + 1].start() if i + 1 < len(marks) else len(text))]
        for i, m in enumerate(marks)
    ]


def _answer_text(p: Problem, answer: str, correct: bool, rng: random.Random) -> str:
    lines = ["Let me work through this step by step."]
    if p.steps:
        wrong_at = rng.randrange(len(p.steps)) if not correct else -1
        value: int | None = None
        for i, s in enumerate(p.steps):
            a, op, x, _, _b = s.split()
            left = int(a) if value is None else value
            value = left + int(x) if op == "+" else left * int(x) if op == "*" else left - int(x)
            if i == wrong_at:
                value += rng.choice([-2, -1, 1, 2])
            if i == len(p.steps) - 1:
                value = int(answer)
            lines.append(f"Step {i + 1}: {left} {op} {x} = {value}")
    elif p.kind == "code":
        lines.append(f"```python\n{answer}\n```")
    else:
        lines.append(f"Step 1: I compute the result of the problem carefully: {answer}.")
    lines.append(f"The answer is \\boxed{{{answer}}}.")
    return "\n".join(lines)


_STEP_LINE = re.compile(r"^Step (\d+): (-?\d+) ([+*-]) (-?\d+) = (-?\d+)\s*$", re.MULTILINE)


def _continue_steps(
    config: OracleConfig, p: Problem, model: str, prefill: str, rng: random.Random
) -> tuple[str, bool]:
    """Continue a partial step-by-step solution of a multi-step problem.

    Each new step is right with probability ``p ** (1 / L)`` (L steps), so a solution
    written from scratch this way is right with probability ``p``; a wrong step is off by
    1 or 2 and later steps compute from the wrong value. Returns the continuation (the
    remaining steps, then the boxed answer) and whether its final answer is right.
    """
    done = _STEP_LINE.findall(prefill)
    value = int(done[-1][4]) if done else None
    per_step = config.p_for(model, p.id) ** (1 / len(p.steps))
    lines = []
    for i in range(len(done), len(p.steps)):
        a, op, x, _, _b = p.steps[i].split()
        left = int(a) if value is None else value
        value = left + int(x) if op == "+" else left * int(x) if op == "*" else left - int(x)
        if rng.random() >= per_step:
            value += rng.choice([-2, -1, 1, 2])
        lines.append(f"Step {i + 1}: {left} {op} {x} = {value}")
    lines.append(f"The answer is \\boxed{{{value}}}.")
    text = "\n".join(lines)
    if prefill and not prefill.endswith("\n"):
        text = "\n" + text
    return text, p.is_correct(str(value))


def reward_scores(bank: ProblemBank, query: str, texts: list[str]) -> list[float]:
    """A reward model's scores for ``texts`` answering ``query`` (vLLM's score API on the
    stand-in): a right answer scores in [0.5, 1), a wrong one in [0, 0.6), so the reward
    ranks well but not perfectly; a query naming no known problem gets seeded noise."""
    tag = _TAG.search(query)
    p = bank.problem(int(tag.group(1))) if tag is not None else None
    out = []
    for t in texts:
        rng = rng_for("reward", query, t)
        if p is None:
            out.append(round(rng.random(), 4))
        elif p.is_correct(extract_boxed(t)):
            out.append(round(0.5 + 0.5 * rng.random(), 4))
        else:
            out.append(round(0.6 * rng.random(), 4))
    return out


def respond(
    config: OracleConfig,
    bank: ProblemBank,
    model: str,
    system: str,
    user: str,
    rng: random.Random,
    prefill: str = "",
) -> tuple[str, bool | None] | None:
    """The oracle's answer text and whether it is right (None: not applicable), or None if
    the prompt names no known problem. A generator given a ``prefill`` on a multi-step
    problem continues it from its last ``Step k:`` line (step-level search)."""
    g24 = _GAME24.search(user)
    if g24 is not None:
        nums = tuple(int(x) for x in g24.groups())
        return _game24(config, model, detect_role(system), system, user, nums, rng)
    tag = _TAG.search(user)
    if tag is None:
        return None
    p = bank.problem(int(tag.group(1)))
    role = detect_role(system)
    if role == "generator" and p.steps and prefill:
        return _continue_steps(config, p, model, prefill, rng)
    if role == "generator":
        correct = rng.random() < config.p_for(model, p.id)
        answer = p.answer if correct else rng.choice(p.distractors)
        return _answer_text(p, answer, correct, rng), correct
    if role == "fuser":
        cands: list[str | None] = [extract_boxed(c) for c in _candidates(user)]
        cands = cands or [extract_boxed(user)]
        any_right = any(p.is_correct(c) for c in cands)
        pc = min(1.0, config.p_correct(model) + config.fuser_boost) if any_right else 0.1
        correct = rng.random() < pc
        answer = p.answer if correct else rng.choice(p.distractors)
        return "Synthesising the candidates.\n" + _answer_text(p, answer, correct, rng), correct
    if role == "test_judge":  # one verdict per listed test: pass when the answer is right
        cand = extract_boxed(user)
        right = p.is_correct(cand)
        count = len(re.findall(r"^Test \d+:", user, re.MULTILINE))
        lines = []
        for k in range(1, count + 1):
            ok = rng.random() < (config.verifier_tpr if right else config.verifier_fpr)
            lines.append(f"Test {k}: {'pass' if ok else 'fail'}")
        return "\n".join(lines), None
    if role == "verifier":
        cand = extract_boxed(user)
        right = p.is_correct(cand)
        yes = rng.random() < (config.verifier_tpr if right else config.verifier_fpr)
        reason = "The steps and the final value check out." if yes else "The final value is off."
        return f"Reasoning: {reason}\nVerdict: {'yes' if yes else 'no'}", yes == right
    if role == "critic":
        lines = []
        for i, c in enumerate(_candidates(user) or [user], start=1):
            right = p.is_correct(extract_boxed(c))
            good = right if rng.random() < config.ranker_accuracy else not right
            verdict = (
                "Strengths: the computation is consistent. Weaknesses: none found."
                if good
                else "Strengths: clear layout. Weaknesses: the final value looks wrong."
            )
            lines.append(f"Candidate {i}: {verdict}")
        return "\n".join(lines), None
    if role == "ranker":
        ranked = _candidates(user)
        order = list(range(1, len(ranked) + 1))
        rng.shuffle(order)
        if rng.random() < config.ranker_accuracy:
            order.sort(key=lambda k: not p.is_correct(extract_boxed(ranked[k - 1])))
        return "Ranking: " + " > ".join(f"[{k}]" for k in order), None
    if role == "step_scorer":
        steps = re.findall(r"Step \d+: (.*)", user)
        scores = []
        broken = False
        truth = list(p.steps)
        for i, s in enumerate(steps):
            ok = not broken and i < len(truth) and s.strip() == truth[i]
            broken = broken or not ok
            base = 0.85 if ok else 0.2
            scores.append(min(1.0, max(0.0, base + rng.uniform(-1, 1) * config.step_noise)))
        return "Step scores: " + ", ".join(f"{s:.2f}" for s in scores), None
    # test_writer
    if "plain language" in system.lower():  # Archon-style natural-language tests
        return (
            f"- The final answer equals {p.answer}\n- The answer shows its reasoning",
            None,
        )
    tests = list(p.tests) or [f"assert answer() == {p.answer!r}"]
    return "```python\n" + "\n".join(tests) + "\n```", None


# -- Game of 24 with memory (Dynamic Cheatsheet) ------------------------------------------

GAME24_INSIGHTS = (
    "* Look for a pair that makes 24 with the rest collapsing to 1 (x*1, x/1) or 0 (x+0).",
    "* Factor 24 as 4*6, 3*8, 2*12 or 1*24 and build each factor from two numbers.",
    "* Division can build fractions that cancel: 8/(3-8/3) = 24.",
    "* Subtraction of a product: a*b - c*d (e.g. 5*5 - 1*1 = 24).",
    "* With repeated numbers, x/x = 1 and x-x = 0 are free helpers.",
    "* Check every candidate by evaluating it; use each number exactly once.",
)
# the cheatsheet's program is the oracle's own solver, as a reader would paste it
GAME24_SOLVER = (
    "```python\nfrom fractions import Fraction\n\n\n" + inspect.getsource(solve24) + "```"
)


def _wrong24(nums: tuple[int, ...], rng: random.Random) -> str:
    a, b, c, d = rng.sample(list(nums), 4)
    return rng.choice([f"{a}*{b}+{c}-{d}", f"({a}+{b})*{c}-{d}", f"{a}+{b}+{c}+{d}"])


def _game24(
    config: OracleConfig,
    model: str,
    role: Role,
    system: str,
    user: str,
    nums: tuple[int, ...],
    rng: random.Random,
) -> tuple[str, bool | None]:
    """Game of 24 (the real puzzles) with a memory-aware simulated model.

    * generator: right with ``p_correct(model)`` plus ``insight_gain`` per ``* `` insight
      line in its context (capped at ``insight_cap``) plus ``example_gain`` per past
      ``Game of 24:`` example shown (capped at ``example_cap``). When its context holds the
      ``solve24`` code it writes a program calling it instead; given that program's output
      (``Your code printed:``) it boxes the printed expression.
    * curator (system prompt mentions curation): rewrites the ``<cheatsheet>`` of its
      prompt, adding a new insight with ``curator_insight_rate`` and, once it holds
      ``solver_after`` insights, the solver code with ``solver_rate``.
    """
    if role == "curator":
        old = _SHEET.search(user)
        lines = [] if old is None else [ln for ln in old.group(1).splitlines() if ln.strip()]
        if lines == ["(empty)"]:
            lines = []
        text = "\n".join(lines)
        have = [i for i in GAME24_INSIGHTS if i in text]
        if len(have) < len(GAME24_INSIGHTS) and rng.random() < config.curator_insight_rate:
            lines.append(GAME24_INSIGHTS[len(have)])
            have.append(GAME24_INSIGHTS[len(have)])
        if (
            "def solve24" not in text
            and len(have) >= config.solver_after
            and rng.random() < config.solver_rate
        ):
            lines.append("* Code: a complete solver; run it on the four numbers.")
            lines.append(GAME24_SOLVER)
        body = "\n".join(lines) or "(empty)"
        return f"Updated the cheatsheet.\n<cheatsheet>\n{body}\n</cheatsheet>", None
    context = system + "\n" + user
    if _CODE_OUTPUT in user:
        printed = user.rsplit(_CODE_OUTPUT, 1)[1].strip().splitlines()
        expr = printed[0].strip() if printed else ""
        ok = check_24(expr, nums)
        return f"The program found an expression.\nThe answer is \\boxed{{{expr}}}.", ok
    if "def solve24" in context:
        block = context[context.index("def solve24") :]
        end = block.find("```")
        code = "from fractions import Fraction\n\n\n" + (block[:end] if end >= 0 else block)
        call = f"print(solve24([{', '.join(map(str, nums))}]))"
        return (
            f"I use the solver from the cheatsheet.\n```python\n{code.rstrip()}\n\n{call}\n```",
            None,
        )
    insights = sum(1 for ln in context.splitlines() if ln.startswith("* "))
    examples = max(0, context.count("Game of 24:") - 1)
    p = (
        config.p_correct(model)
        + min(config.insight_cap, config.insight_gain * insights)
        + min(config.example_cap, config.example_gain * examples)
    )
    correct = rng.random() < min(1.0, p)
    sol = solve24_expression(tuple(sorted(nums)))
    expr = sol if correct and sol else _wrong24(nums, rng)
    return (
        f"Let me try combinations of {' '.join(map(str, nums))}.\nThe answer is \\boxed{{{expr}}}.",
        correct and sol is not None,
    )


def majority_vote_accuracy(p: float, k: int, n: int) -> float:
    """Exact accuracy of plurality voting over ``n`` samples, each right with probability
    ``p`` and otherwise one of ``k`` wrong answers uniformly; ties broken uniformly."""
    q = (1 - p) / k
    total = 0.0
    # enumerate counts (c, w_1..w_k) with c + sum(w) = n
    for c in range(n + 1):
        for ws in _compositions(n - c, k):
            prob = math.factorial(n) / math.factorial(c)
            for w in ws:
                prob /= math.factorial(w)
            prob *= p**c * q ** (n - c)
            top = max((c, *ws))
            if c == top:
                total += prob / (1 + sum(1 for w in ws if w == top))
    return total


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    if parts == 1:
        return [(total,)]
    return [(i, *rest) for i in range(total + 1) for rest in _compositions(total - i, parts - 1)]


# -- tools --------------------------------------------------------------------------------

_EXPRESSION = re.compile(r"What is ([-\d\s+*/().]+)\?")


def problem_expression(p: Problem) -> str | None:
    """An arithmetic expression whose value is ``p``'s answer (what a model that knows to
    use a calculator would write), or None for a problem that is not arithmetic."""
    m = _EXPRESSION.search(p.question)
    if m:
        return m.group(1).strip()
    if p.steps:
        expr = ""
        for s in p.steps:
            a, op, x, _, _r = s.split()
            expr = f"{a} {op} {x}" if not expr else f"({expr}) {op} {x}"
        return expr
    return None


def _tool_arguments(name: str, schema: dict[str, Any], expr: str) -> str | None:
    """The call's JSON arguments: a calculator gets the expression, a Python runner a
    program that prints it, any other tool with one string argument the expression."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return None
    strings = [k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "string"]
    if not strings:
        return None
    key = "code" if "code" in strings else "expression" if "expression" in strings else strings[0]
    value = f"print({expr})" if key == "code" or name == "python" else expr
    return json.dumps({key: value})


def tool_reply(
    bank: ProblemBank,
    user: str,
    tools: dict[str, dict[str, Any]],
    results: list[str],
    tool_choice: str | None,
) -> tuple[str, tuple[str, str] | None, bool | None] | None:
    """The oracle as a tool-using model, for one turn: ``(text, None, correct)`` to answer
    or ``("", (tool, arguments JSON), None)`` to call a tool; None when tools do not apply
    (no known arithmetic problem, no usable tool): then it answers as without tools.

    It calls the calculator (else the Python tool, else any tool that takes a string) with
    the problem's expression; given the result it boxes it, so its answer is as right as
    the tool's result. After an error result it calls again once, then answers without.
    """
    tag = _TAG.search(user)
    if tag is None or tool_choice == "none" or not tools:
        return None
    p = bank.problem(int(tag.group(1)))
    expr = problem_expression(p)
    if expr is None:
        return None
    names = list(tools)
    if tool_choice not in (None, "auto", "required") and tool_choice in tools:
        names = [tool_choice]
    else:

        def fit(n: str) -> tuple[bool, bool, bool]:
            props = tools[n].get("properties") if isinstance(tools[n], dict) else None
            named = isinstance(props, dict) and bool({"expression", "code"} & set(props))
            return n != "calculator", n != "python", not named

        names.sort(key=fit)
    if results:
        last = results[-1].strip()
        if last.lower().startswith("error") and len(results) < 2:
            pass  # try once more below
        else:
            value = last.splitlines()[0].strip() if last else ""
            if last.lower().startswith("error"):
                return "The tool failed twice; I cannot compute this.", None, False
            return (f"The tool computed {expr} = {value}.\nThe answer is \\boxed{{{value}}}.",
                    None, p.is_correct(value))  # fmt: skip
    for name in names:
        args = _tool_arguments(name, tools[name], expr)
        if args is not None:
            return "", (name, args), None
    return None


# -- typed answers ------------------------------------------------------------------------

_BOXED_LAST = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def schema_reply(user: str, schema: dict[str, Any]) -> str:
    """The stand-in as a formatter (``response_format``): the answer in ``user`` (its last
    ``\\boxed{}``, else its last number, else its last line) as JSON that matches
    ``schema``. The first string or number field of an object takes the answer, the
    others a plain value of their type, so the reply validates against simple schemas."""
    boxed = _BOXED_LAST.findall(user)
    numbers = _NUMBER.findall(user)
    lines = [ln for ln in user.splitlines() if ln.strip()]
    answer = boxed[-1] if boxed else numbers[-1] if numbers else (lines[-1] if lines else "")
    placed = [False]

    def number(integer: bool) -> float | int:
        try:
            x = float(answer.replace(",", ""))
        except ValueError:
            return 0
        return int(x) if integer or x.is_integer() else x

    def value(s: Any) -> Any:
        if not isinstance(s, dict):
            return None
        if "const" in s:
            return s["const"]
        if s.get("enum"):
            return s["enum"][0]
        for key in ("anyOf", "oneOf", "allOf"):
            if s.get(key):
                return value(s[key][0])
        kind = s.get("type", "object")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind in ("string", "number", "integer") and not placed[0]:
            placed[0] = True
            return answer if kind == "string" else number(kind == "integer")
        if kind == "string":
            return ""
        if kind in ("number", "integer"):
            return s.get("minimum", 0)
        if kind == "boolean":
            return True
        if kind == "array":
            return [value(s.get("items", {}))] if s.get("minItems") else []
        if kind == "null":
            return None
        props = s.get("properties") or {}
        want = list(s.get("required") or props)
        return {k: value(props.get(k, {})) for k in want}

    if not (schema.get("properties") or schema.get("type") not in (None, "object")):
        return json.dumps({"answer": answer})  # any JSON object
    return json.dumps(value(schema))
