"""Tests the code under test cannot forge.

A test harness that runs in the same interpreter as the solution can be read and
rewritten by it: wrong code can find the harness's result marker and print a perfect
result, or call ``os._exit(0)`` before the checks run. So :func:`run_checked` runs the
two apart, each in its own OS sandbox:

* the **solution sandbox** loads the solution and serves calls to its top-level
  functions, one JSON line per call on a private channel;
* the **test sandbox** runs each test with every one of those names bound to a proxy:
  calling it sends the arguments to the solution sandbox, through Ponder, and returns
  the value it sends back (or raises the exception it raised).

The assertions run where the solution cannot reach them: another sandbox, another PID
namespace, no shared file. Values cross as data (numbers, strings, bytes, ``None``,
booleans and lists, tuples, sets and dicts of them); a test passes only on positive
evidence: its own line saying it ran to the end, followed by the test sandbox's final
count. A solution that exits, crashes, loops or writes on the channel only fails its
own calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.tools._sandbox import SandboxLimits, SandboxProcess, open_sandbox

__all__ = ["CheckedRun", "run_checked"]

# Values cross the sandboxes as tagged JSON (the same code runs on both sides).
_CODEC = r"""
import json as _json, math as _math

def _enc(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return {"i": str(v)}
    if isinstance(v, float):
        return {"f": repr(v)}
    if isinstance(v, complex):
        return {"c": [repr(v.real), repr(v.imag)]}
    if isinstance(v, bytes):
        return {"b": v.hex()}
    if isinstance(v, list):
        return {"l": [_enc(x) for x in v]}
    if isinstance(v, tuple):
        return {"t": [_enc(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {"s" if isinstance(v, set) else "fs": [_enc(x) for x in v]}
    if isinstance(v, dict):
        return {"d": [[_enc(k), _enc(x)] for k, x in v.items()]}
    raise TypeError(f"a {type(v).__name__} cannot cross between the sandboxes "
                    "(numbers, strings, bytes, None, bools, lists, tuples, sets, dicts)")

def _dec(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    (tag, x), = v.items()
    if tag == "i": return int(x)
    if tag == "f": return float(x)
    if tag == "c": return complex(float(x[0]), float(x[1]))
    if tag == "b": return bytes.fromhex(x)
    if tag == "l": return [_dec(y) for y in x]
    if tag == "t": return tuple(_dec(y) for y in x)
    if tag == "s": return {_dec(y) for y in x}
    if tag == "fs": return frozenset(_dec(y) for y in x)
    if tag == "d": return {_dec(k): _dec(y) for k, y in x}
    raise ValueError(f"unknown tag {tag}")
"""

# The solution's side: load it, announce its functions, serve calls.
_SERVE = (
    _CODEC
    + r"""
import os, sys
_chan = os.fdopen(os.dup(1), "w", buffering=1)  # the channel; the code's prints go to stderr
os.dup2(2, 1)
_ns = {"__name__": "solution"}
try:
    with open("solution.py", encoding="utf-8") as _f:
        exec(compile(_f.read(), "solution.py", "exec"), _ns)
except BaseException as _e:
    _chan.write(_json.dumps({"load_error": (type(_e).__name__ + ": " + str(_e))[:500]}) + "\n")
    raise SystemExit(0)
_names = sorted(k for k, v in _ns.items() if callable(v) and not k.startswith("__"))
_chan.write(_json.dumps({"ready": _names}) + "\n")
for _line in sys.stdin:
    _msg = _json.loads(_line)
    try:
        _args = [_dec(a) for a in _msg["args"]]
        _kwargs = {k: _dec(a) for k, a in _msg["kwargs"].items()}
        _reply = {"id": _msg["id"], "value": _enc(_ns[_msg["call"]](*_args, **_kwargs))}
    except BaseException as _e:
        _reply = {"id": _msg["id"], "raise": type(_e).__name__, "message": str(_e)[:300]}
    _chan.write(_json.dumps(_reply) + "\n")
"""
)

# The tests' side: every name of the solution is a proxy; one line per finished test.
_TESTS = (
    _CODEC
    + r'''
import builtins, os, sys
TESTS = _json.loads(__TESTS__)
MODE = __MODE__
_chan = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
_names = _json.loads(sys.stdin.readline())
_count = [0]

class SolutionError(Exception):
    """The solution raised an exception that is not a built-in one."""

def _proxy(name):
    def call(*args, **kwargs):
        _count[0] += 1
        _chan.write(_json.dumps({"id": _count[0], "call": name, "args": [_enc(a) for a in args],
                                 "kwargs": {k: _enc(v) for k, v in kwargs.items()}}) + "\n")
        reply = _json.loads(sys.stdin.readline())
        if "raise" in reply:
            exc = getattr(builtins, reply["raise"], None)
            if not (isinstance(exc, type) and issubclass(exc, Exception)):
                exc = SolutionError
            raise exc(reply["message"])
        return _dec(reply["value"])
    call.__name__ = name
    return call

for _i, _t in enumerate(TESTS):
    _ns = {n: _proxy(n) for n in _names}
    _ns["__name__"] = "__main__"
    _v = None
    try:
        if MODE == "eval":
            _v = _json.dumps(_enc(eval(compile(_t, f"probe {_i + 1}", "eval"), _ns)))
        else:
            exec(compile(_t, f"test {_i + 1}", "exec"), _ns)
        _r = None
    except BaseException as _e:
        _r = (type(_e).__name__ + ": " + str(_e))[:300]
    _chan.write(_json.dumps({"test": _i, "result": _r, "value": _v}) + "\n")
_chan.write(_json.dumps({"done": len(TESTS)}) + "\n")
'''
)

_LINE = 1 << 20  # longest protocol line: open_sandbox's stream limit


@dataclass
class CheckedRun:
    """The outcome of :func:`run_checked`: per test ``None`` (it ran to its end) or why
    it failed; ``error`` when the run as a whole could not check anything."""

    results: list[str | None] = field(default_factory=list)
    error: str | None = None
    values: list[str | None] = field(default_factory=list)  # probes: each value, as JSON

    @property
    def passed(self) -> int:
        return sum(r is None for r in self.results)

    @property
    def rate(self) -> float:
        return self.passed / len(self.results) if self.results else 0.0


class _Broken(Exception):
    pass


async def _line(box: SandboxProcess, what: str) -> Any:
    assert box.proc.stdout is not None
    try:
        raw = await box.proc.stdout.readline()
    except (ValueError, asyncio.LimitOverrunError):
        raise _Broken(f"the {what} wrote a line longer than {_LINE} bytes") from None
    if not raw:
        raise _Broken(f"the {what} ended early")
    try:
        return json.loads(raw)
    except ValueError:
        raise _Broken(f"the {what} broke the protocol") from None


async def _send(box: SandboxProcess, msg: object) -> None:
    assert box.proc.stdin is not None
    box.proc.stdin.write((json.dumps(msg) + "\n").encode())
    try:
        await box.proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        raise _Broken("a sandbox stopped reading") from None


async def _drain(box: SandboxProcess, keep: bytearray, limit: int = 20_000) -> None:
    """Read a sandbox's stderr to its end (so it never stalls), keeping its tail."""
    assert box.proc.stderr is not None
    while chunk := await box.proc.stderr.read(65536):
        keep += chunk
        del keep[:-limit]


async def run_checked(
    solution: str,
    tests: Sequence[str],
    limits: SandboxLimits | None = None,
    *,
    probes: bool = False,
) -> CheckedRun:
    """Run ``tests`` (Python source, e.g. ``assert add(1, 2) == 3``) against the top-level
    functions of ``solution``, in two sandboxes the solution cannot cross (see the module
    docstring). With ``probes=True`` each test is an expression (``add(1, 2)``) and its
    value is kept in ``values``. Never raises for the solution's faults; the whole
    exchange must finish within ``limits.timeout``."""
    lim = limits or SandboxLimits(timeout=10)
    tests = list(tests)
    out = CheckedRun()
    errs_s, errs_t = bytearray(), bytearray()
    program = _TESTS.replace("__TESTS__", repr(json.dumps(tests))).replace(
        "__MODE__", repr("eval" if probes else "exec")
    )
    async with (
        open_sandbox(_SERVE, files={"solution.py": solution}, limits=lim) as sol,
        open_sandbox(program, limits=lim) as chk,
    ):
        drains = [
            asyncio.ensure_future(_drain(sol, errs_s)),
            asyncio.ensure_future(_drain(chk, errs_t)),
        ]
        try:
            async with asyncio.timeout(lim.timeout):
                first = await _line(sol, "solution")
                if "load_error" in first:
                    out.error = f"the code does not load: {first['load_error']}"
                    out.results = [out.error] * len(tests)
                    out.values = [None] * len(tests)
                    return out
                if not isinstance(first.get("ready"), list):
                    raise _Broken("the solution broke the protocol")
                await _send(chk, first["ready"])
                while True:
                    msg = await _line(chk, "tests")
                    if "call" in msg:
                        try:
                            await _send(sol, msg)
                            reply = await _line(sol, "solution")
                        except _Broken as e:
                            reply = {"id": msg["id"], "raise": "RuntimeError", "message": str(e)}
                        if reply.get("id") != msg["id"]:
                            reply = {"id": msg["id"], "raise": "RuntimeError",
                                     "message": "the solution broke the protocol"}  # fmt: skip
                        await _send(chk, reply)
                    elif "test" in msg and msg["test"] == len(out.results):
                        out.results.append(msg["result"])
                        out.values.append(msg.get("value"))
                    elif msg.get("done") == len(tests) == len(out.results):
                        return out
                    else:
                        raise _Broken("the tests broke the protocol")
        except TimeoutError:
            why = f"the tests did not finish within {lim.timeout:g} s"
        except _Broken as e:
            tail = (errs_t or errs_s).decode(errors="replace").strip().splitlines()
            why = f"{e}" + (f": {tail[-1]}" if tail else "")
        finally:
            for d in drains:
                d.cancel()
            for d in drains:
                with contextlib.suppress(asyncio.CancelledError):
                    await d
    # no positive evidence for the tests that did not report: they failed
    out.error = why
    out.values += [None] * (len(tests) - len(out.results))
    out.results += [why] * (len(tests) - len(out.results))
    return out
