"""Start-up costs a user waits for: the CLI (``--help``, ``validate``, ``run`` refusing a bad
file) and a sandboxed Python run, side by side.

Each CLI command runs in a fresh process (as a user runs it); the figure is the median
wall time of ``--repeats`` runs. The sandbox figure is the median time of
``run_python("pass")`` in this process (bubblewrap, seccomp, cgroups as root).

    python benchmarks/cli_start.py               # 5 repeats
    python benchmarks/cli_start.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL = 0.5  # seconds, for --help and validate (issue: CLI start)

WORKFLOW = """name: start
models: {m: local:smollm2}
layers:
  - generate: {n: 2}
  - vote: {}
"""


def _ponder() -> list[str]:
    """The installed ``ponder`` command (next to this interpreter, as in a venv)."""
    beside = Path(sys.executable).parent / "ponder"
    if beside.is_file():
        return [str(beside)]
    exe = shutil.which("ponder")
    return [exe] if exe else [sys.executable, "-c", "from ponder.apps.cli import run; run()"]


def _median_cmd(args: list[str], repeats: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        done = subprocess.run([*_ponder(), *args], capture_output=True, check=False)
        times.append(time.perf_counter() - t)
        code = done.returncode
    return statistics.median(times), code


async def _sandbox(repeats: int) -> float | None:
    from ponder.tools import SandboxLimits, run_python, sandbox_unavailable_reason

    if sandbox_unavailable_reason() is not None:
        return None
    await run_python("pass", limits=SandboxLimits())  # warm: the availability check
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        await run_python("pass", limits=SandboxLimits())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        good, bomb = Path(d) / "wf.yaml", Path(d) / "bomb.yaml"
        good.write_text(WORKFLOW)
        bomb.write_text("\n".join(['a: &a ["x","x","x","x","x","x","x","x","x"]', *(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True))]))  # fmt: skip
        rows: dict[str, Any] = {
            "ponder --help": _median_cmd(["--help"], args.repeats),
            "ponder validate (a good file)": _median_cmd(["validate", str(good)], args.repeats),
            "ponder run (a 700-byte alias bomb)": _median_cmd(
                ["run", str(bomb), "q"], args.repeats
            ),
        }
    sandbox = asyncio.run(_sandbox(args.repeats))
    if args.json:
        out = {k: {"seconds": t, "exit": c} for k, (t, c) in rows.items()}
        out["sandbox run_python('pass')"] = {"seconds": sandbox}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'what':<40} {'median s':>9} {'exit':>5}")
    for name, (t, code) in rows.items():
        print(f"{name:<40} {t:>9.3f} {code:>5}")
    shown = f"{sandbox:.3f}" if sandbox is not None else "n/a (no sandbox here)"
    label = "sandbox run_python('pass')"
    print(f"{label:<40} {shown:>9}")
    print(f"goal: --help and validate under {GOAL} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
