"""The command line as a new user meets it: every command's help (real metavars, whole
sentences), --version, suggestions for near misses, one-line errors and exit codes."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

import ponder
from ponder.apps.cli import main
from ponder.apps.cli._app import _command


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in sorted(getattr(group, "commands", {}).items()):
        out.append((*path, name))
        out += commands(cmd, (*path, name))
    return out


ALL = commands(_command())


def test_there_are_commands_to_walk() -> None:
    assert ("eval",) in ALL
    assert ("memory", "export") in ALL


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) for p in ALL])
def test_every_command_has_help_with_real_metavars(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "<str>" not in out
    assert "<bool>" not in out
    assert "<int>" not in out
    assert "Usage: ponder " + " ".join(path) in " ".join(out.split())


def test_docstrings_are_not_broken_mid_sentence() -> None:
    for path in ALL:
        cmd: Any = _command()
        for word in path:
            cmd = cmd.commands[word]
        first = (cmd.help or "").split("\n\n")[0]
        assert "\n" not in first, f"{' '.join(path)}: {first!r}"


def test_version_flag_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ponder {ponder.__version__}"
    assert main(["version"]) == 0


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["evl"], "Did you mean 'eval'?"),
        (["improt-archon", "x.json"], "Did you mean 'import-archon'?"),
        (["memory", "shw"], "Did you mean 'show'?"),
        (["zzzz"], "Commands: demo"),
    ],
)
def test_near_miss_commands_get_a_suggestion_and_exit_2(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert hint in capsys.readouterr().err


def test_a_misspelt_component_gets_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = tmp_path / "w.yaml"
    wf.write_text("models:\n  m: vllm:m@http://127.0.0.1:9/v1\nlayers:\n  - generat: {n: 2}\n")
    assert main(["validate", str(wf)]) == 1
    assert "did you mean 'generate'" in capsys.readouterr().err


def test_a_port_in_use_is_one_line_and_nothing_is_printed_before(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        assert main(["standin", "--port", port]) == 1
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err.strip().count("\n") == 0
        assert "already in use" in out.err
        assert main(["serve", "--workflows", "examples/workflows", "--port", port]) == 1
        out = capsys.readouterr()
        assert out.out == ""
        assert "port " + port + " on 127.0.0.1 is already in use" in out.err


def test_eval_report_skips_other_jsonl_files_and_fails_without_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "questions.jsonl").write_text('{"question": "q"}\n[1, 2]\n')
    (tmp_path / "run.jsonl").write_text(
        json.dumps({"id": "a", "correct": True, "answer": "1", "spend": {}}) + "\n"
    )
    files = [str(p) for p in sorted(tmp_path.glob("*.jsonl"))]
    assert main(["eval-report", *files]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err
    assert "questions.jsonl: not ponder eval results" in err
    assert main(["eval-report", str(tmp_path / "questions.jsonl")]) == 1
    assert "no ponder eval results" in capsys.readouterr().err
    assert main(["eval-report", str(tmp_path / "missing.jsonl")]) == 1


def test_memory_export_of_an_unknown_namespace_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "m.sqlite")
    assert main(["memory", "export", "nosuch", "--store", store]) == 1
    assert "no namespace 'nosuch'" in capsys.readouterr().err


def test_serve_walks_subfolders_and_refuses_two_workflows_with_one_name(tmp_path: Path) -> None:
    from ponder.apps.server import load_workflows
    from ponder.errors import ConfigurationError

    body = "name: {n}\nmodels:\n  m: vllm:m@http://127.0.0.1:9/v1\nlayers:\n  - generate\n"
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "a.yaml").write_text(body.format(n="one"))
    (tmp_path / "sub" / "b.yaml").write_text(body.format(n="two"))
    (tmp_path / ".hidden" / "c.yaml").write_text("not: [a workflow")
    assert sorted(load_workflows(tmp_path)) == ["one", "two"]
    (tmp_path / "sub" / "c.yaml").write_text(body.format(n="one"))
    with pytest.raises(ConfigurationError, match="two workflows are named 'one'"):
        load_workflows(tmp_path)


def test_validation_reports_every_problem_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = tmp_path / "w.yaml"
    wf.write_text(
        "name: bad\n"
        "modles: {}\n"  # a misspelt top-level key does not hide the rest
        "models:\n  m: vllm:m@http://127.0.0.1:9/v1\n"
        "layers:\n"
        "  - generate: {model: m, n: 100000000, temprature: 0.5}\n"
        "  - fuse: {modle: m}\n"
        "  - rank: {model: nosuch, top_k: 0}\n"
        "  - vot\n"
    )
    assert main(["validate", str(wf)]) == 1
    err = capsys.readouterr().err
    assert "w.yaml:2: modles: unknown key 'modles'; did you mean 'models'?" in err
    assert "w.yaml:6: layers[0].generate.n: Input should be less than or equal to 4096" in err
    assert "unknown key 'temprature'; did you mean 'temperature'?" in err
    assert "w.yaml:7: layers[1].fuse.modle: unknown key 'modle'; did you mean 'model'?" in err
    assert "layers[2].rank.top_k: Input should be greater than or equal to 1" in err
    assert "model 'nosuch' is not defined" in err
    assert "unknown component 'vot'; did you mean 'vote'?" in err


def test_an_archon_key_one_letter_off_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "a.json"
    src.write_text(
        json.dumps(
            {"layers": [[{"type": "generator", "modle": "gpt-4o", "model_type": "OpenAI_API"}]]}
        )
    )
    assert main(["import-archon", str(src)]) == 1
    assert (
        "layers[0][0].modle: unknown key 'modle'; did you mean 'model'?" in capsys.readouterr().err
    )


def test_validate_and_help_import_no_graph_runtime(tmp_path: Path) -> None:
    """CLI start: --help and validate never load LangGraph (about a second of imports);
    it loads when a graph is compiled. Nor do they load the model layer, the workflow
    builder or components the file does not use: a component's module loads when a
    workflow names it. benchmarks/cli_start.py measures the time."""
    import subprocess
    import sys

    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: x\nmodels: {m: local:smollm2}\nlayers:\n  - generate: {n: 2}\n  - vote: {}\n"
    )
    probe = (
        "import sys\n"
        "from ponder.apps.cli import main\n"
        f"assert main(['validate', {str(wf)!r}]) == 0\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('langgraph', 'langchain_core', 'ponder.backends._model',\n"
        "    'ponder.workflows._build', 'ponder.agents._adaptive', 'ponder.agents._search',\n"
        "    'ponder.memory') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-500:]


def test_the_graph_runtime_names_its_ends_as_langgraph_does() -> None:
    from langgraph.graph import END, START

    from ponder.graphs import _runtime

    assert (_runtime.START, _runtime.END) == (START, END)
