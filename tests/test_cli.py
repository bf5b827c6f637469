"""The ``ponder`` command line, run in-process through ``main(argv)``."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ponder.apps.cli import main
from ponder.testing import StandinConfig, StandinServer


def test_version_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert "ponder 0." in capsys.readouterr().out


def test_generate_prints_json_from_a_standin(capsys: pytest.CaptureFixture[str]) -> None:
    with StandinServer(StandinConfig(time_scale=0)).in_thread() as s:
        rc = main(["generate", f"vllm:strong@{s.base_url}", "Problem 1: go", "-n", "3", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["choices"]) == 3
    assert all("\\boxed{" in c["text"] for c in out["choices"])
    assert out["usage"]["completion_tokens"] > 0


def test_unknown_provider_is_a_clear_error_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "nosuch:model", "hi"]) == 1
    err = capsys.readouterr().err
    assert "nosuch" in err
    assert "Traceback" not in err


def test_missing_argument_is_a_usage_error() -> None:
    assert main(["generate"]) == 2


def test_standin_refuses_bad_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["standin", "--port", "0", "--config", "{slots: 8"]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["standin", "--port", "0", "--config", '{"slots": 0}']) == 1
    assert "slots" in capsys.readouterr().err


def test_demo_votes_on_bundled_questions(capsys: pytest.CaptureFixture[str]) -> None:
    with StandinServer(StandinConfig(time_scale=0)).in_thread() as s:
        rc = main(["demo", "--model", f"vllm:strong@{s.base_url}", "-n", "3", "--questions", "2"])
    assert rc == 0
    assert "voted:" in capsys.readouterr().out


def test_demo_on_the_standin_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--standin", "-n", "3", "--questions", "2"]) == 0
    assert "voted:" in capsys.readouterr().out


def test_run_exits_3_when_every_node_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wf = tmp_path / "dead.yaml"
    wf.write_text(
        f"models:\n  m: vllm:m@http://127.0.0.1:{port}/v1\nlayers:\n  - generate: {{n: 2}}\n"
        "  - vote\n"
    )
    monkeypatch.setenv("PONDER_MAX_RETRIES", "0")
    code = main(["run", str(wf), "2+2?", "--checkpoint", str(tmp_path / "c.db")])
    assert code == 3
    assert "failed" in capsys.readouterr().out


def test_run_exits_0_when_it_answers(tmp_path: Path) -> None:
    with StandinServer(StandinConfig(time_scale=0)).in_thread() as s:
        wf = tmp_path / "ok.yaml"
        wf.write_text(
            f"models:\n  m: vllm:strong@{s.base_url}\nlayers:\n  - generate: {{n: 2}}\n  - vote\n"
        )
        code = main(["run", str(wf), "2+2?", "--checkpoint", str(tmp_path / "c.db")])
    assert code == 0
