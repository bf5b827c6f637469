"""Answer extraction and normalisation: the keys that votes count and verifiers compare.

``extract_answer(text, kind)`` pulls the final answer out of a model's reply;
``normalize_answer(answer, kind)`` maps equivalent spellings to one key (``"1/2"``,
``"0.5"``, ``"\\frac{1}{2}"`` → ``"1/2"``; ``"(B)"``, ``"b"``, ``"Answer: B"`` → ``"B"``).
``answers_equivalent`` decides mathematical equivalence with ``math-verify`` when it is
installed (the ``eval`` extra), else with the normaliser.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from typing import Literal

__all__ = ["AnswerKind", "answers_equivalent", "extract_answer", "normalize_answer"]

AnswerKind = Literal["auto", "number", "math", "choice", "text", "code"]

_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_OPEN_AT_END = re.compile(r"\\(?:boxed|fbox)\s*$")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*[:\s]*(.+?)(?:\.\s|\.$|\n|$)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_CHOICE_PAREN = re.compile(r"[(\[]([A-Ja-j])[)\]]")
_CHOICE_BARE = re.compile(r"(?<![A-Za-z0-9])([A-J])(?![A-Za-z0-9])")
_WORD_AFTER = re.compile(r"\s+[a-z]")


def _choices(text: str) -> list[str]:
    """Standalone option letters, skipping the words "I" and "A" ("I think", "A is")."""
    out = []
    for m in _CHOICE_BARE.finditer(text):
        if m.group(1) in "IA" and _WORD_AFTER.match(text, m.end()):
            continue
        out.append(m.group(1))
    return out


def _choice(text: str) -> str | None:
    found = _CHOICE_PAREN.findall(text) or _choices(text)
    return str(found[-1]).upper() if found else None


_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}")
_CODE_BLOCK = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)```", re.DOTALL)


_BRACE = {"{": 1, "}": -1}


class _CutOff(Exception):
    """The text ends inside its last ``\\boxed``: the answer was being written."""


def _boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, with nested braces. Raises _CutOff when
    the last box never closes (a sample cut off by max_tokens: no answer, not an earlier
    box or the text around it)."""
    last: str | None = None
    for m in _BOXED_START.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += _BRACE.get(text[i], 0)
            i += 1
        if depth != 0:
            raise _CutOff
        last = text[m.end() : i - 1].strip()
    if _BOXED_OPEN_AT_END.search(text):  # "\\boxed" with its brace not written yet
        raise _CutOff
    return last


def extract_answer(text: str | None, kind: AnswerKind = "auto") -> str | None:
    """The final answer in ``text``, or None when there is none to find.

    Order: the last ``\\boxed{}``; then "the answer is X" / "Answer: X"; then, by kind,
    the last number, the last standalone choice letter, the last fenced code block, or
    (``text``) the last non-empty line. A text cut off inside its last ``\\boxed{`` has
    no answer (None): what it was writing is unknown.
    """
    if not text or not text.strip():
        return None
    if kind == "code":
        blocks = _CODE_BLOCK.findall(text)
        return blocks[-1].strip() if blocks else None
    try:
        boxed = _boxed(text)
    except _CutOff:
        return None
    if boxed:
        return boxed
    said = _ANSWER_IS.findall(text)
    if said:
        value = said[-1].strip().strip("*$ ")
        if kind == "choice":
            return _choice(value)
        if kind == "number":
            nums = _NUMBER.findall(value)
            return str(nums[-1]) if nums else None
        if value:
            return str(value)
    if kind in ("number", "math", "auto"):
        nums = _NUMBER.findall(text)
        return str(nums[-1]) if nums else None
    if kind == "choice":
        return _choice(text)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _as_fraction(s: str) -> Fraction | None:
    s = s.replace(",", "").replace(" ", "")
    m = _FRAC.fullmatch(s)
    if m:
        s = f"{m.group(1)}/{m.group(2)}"
    s = s.removeprefix("+")
    if s.endswith("%"):
        f = _as_fraction(s[:-1])
        return f / 100 if f is not None else None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_answer(answer: str | None, kind: AnswerKind = "auto") -> str | None:
    """A canonical key for ``answer``: equal keys mean the same answer."""
    if answer is None:
        return None
    a = answer.strip()
    if kind == "code":
        lines = [
            ln.rstrip() for ln in a.splitlines() if ln.strip() and not ln.strip().startswith("#")
        ]
        return "\n".join(lines) or None
    a = a.strip("$ ").removeprefix("\\(").removesuffix("\\)").strip()
    a = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", a)
    a = a.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    a = a.rstrip(".").strip()
    if kind == "choice" or (kind == "auto" and re.fullmatch(r"\(?[A-Ja-j]\)?", a)):
        m = re.fullmatch(r"\(?([A-Ja-j])\)?", a)
        if m:
            return m.group(1).upper()
        if kind == "choice":
            return _choice(a)
    if kind in ("auto", "number", "math"):
        f = _as_fraction(a)
        if f is not None:
            return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"
        if kind == "number":
            return None
    return re.sub(r"\s+", " ", a).lower() or None


_mv_lock = threading.Lock()


def answers_equivalent(a: str | None, b: str | None, kind: AnswerKind = "math") -> bool:
    """Whether two answers are the same: normalised keys, then ``math-verify`` for math."""
    if a is None or b is None:
        return False
    na, nb = normalize_answer(a, kind), normalize_answer(b, kind)
    if na is not None and na == nb:
        return True
    if kind not in ("math", "auto"):
        return False
    try:
        from math_verify import parse, verify  # type: ignore[import-untyped]
    except ImportError:
        return False
    in_main = threading.current_thread() is threading.main_thread()
    timeout = 5 if in_main else None  # math-verify's timeout uses SIGALRM (main thread only)
    with _mv_lock:
        try:
            ga = parse(f"${a}$", parsing_timeout=timeout)
            gb = parse(f"${b}$", parsing_timeout=timeout)
            return bool(ga and gb and verify(ga, gb, timeout_seconds=timeout))
        except Exception:
            return False
