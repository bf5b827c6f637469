"""Every script in benchmarks/ runs, at a tiny setting, so none rots unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BENCH = ROOT / "benchmarks"

#: script -> the tiny setting it is smoke-run with here
SMOKE: dict[str, list[str]] = {
    "adaptive.py": ["--problems", "4"],
    "batch.py": ["--queries", "1", "--policies", "fifo"],
    "fanout.py": ["--quick", "--ttft", "0.01", "--per-token", "0.0001", "--length", "4"],
    "game24_memory.py": ["--puzzles", "3", "--no-local"],
    "graph_overhead.py": ["--nodes", "5", "--repeats", "2"],
    "live_answer.py": ["--questions", "2", "--ttft", "0.02", "--per-token", "0.001"],
    "serve_load.py": ["--clients", "4", "--requests", "8"],
    "techniques.py": ["--problems", "4"],
    "local.py": ["--models", "smollm2", "--ns", "1,2", "--tokens", "8", "--trials", "1"],
    "cli_start.py": ["--repeats", "1"],
    "agents_small.py": [
        "--model",
        "local:smollm2",
        "--prompts",
        "1",
        "--typed",
        "0",
        "--no-server",
        "--out",
        "agents.json",
    ],
}
#: smoke-run with the real Qwen 0.5B model, and their outputs checked, in test_fixtures.py
ELSEWHERE = {"real_model.py", "real_model_pipelines.py", "real_model_pal.py"}


def test_the_memo_table_runs() -> None:
    """graph_overhead.py --memos: the figures the code cites where it keeps a memo."""
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(BENCH / "graph_overhead.py"), "--memos",
         "--nodes", "5", "--repeats", "3", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2500:]
    import json

    table = json.loads(done.stdout)
    assert set(table) >= {"every memo", "no memo", "resolved params (Model._params)"}
    assert all(us > 0 for us in table.values())


def test_every_benchmark_script_has_a_smoke_run() -> None:
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SMOKE) | ELSEWHERE


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_the_benchmark_runs_at_a_tiny_setting(script: str, tmp_path: Path) -> None:
    if script in ("local.py", "agents_small.py"):
        pytest.importorskip("llama_cpp", reason="the local extra is not installed")
    if not (BENCH / script).is_file():
        pytest.fail(f"benchmarks/{script} is missing")
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(BENCH / script), *SMOKE[script]],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PONDER_LOCAL_THREADS": "2", "PYTHONPATH": str(BENCH)},
    )
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-2500:])
    assert done.stdout.strip(), "the benchmark printed nothing"
