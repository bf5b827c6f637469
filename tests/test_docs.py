"""Every code block of README.md and docs/*.md runs, as written, the way a reader would
paste it: Python blocks as whole programs, shell blocks command by command, YAML blocks
validated as workflow files (and, when they name an example file, equal to it).

A block can carry a marker in an HTML comment on the line before its fence:

* ``<!-- docs: standin -->``: it needs a real API key or server; its model strings are
  swapped for the stand-in's (``vllm:strong@<stand-in>``) and it runs the same.
* ``<!-- docs: continues -->``: a Python block that continues the previous Python block
  of the same page (run as one program with it).
* ``<!-- docs: serve -->``: it talks to ``ponder serve`` on 127.0.0.1:8080, which the test
  starts (with the examples and keys sk-k1, sk-k2) on a free port.
* ``<!-- docs: skip REASON -->``: not run here (hours of benchmarks, a Ray cluster, a real
  Slack workspace); the reason is shown in the test report.

In shell blocks, ``pip install`` and ``./dev`` lines are what CI itself runs and are
skipped; ``ponder standin ... &`` is the test's own stand-in (``PONDER_STANDIN`` points at
it, and ``127.0.0.1:8000`` in commands is rewritten to it); ``ponder serve`` is started,
checked to answer ``/health`` and stopped.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ponder.testing import StandinConfig, StandinServer
from ponder.workflows import load_spec

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"(?:<!--\s*docs:\s*(?P<mark>[^>]*?)\s*-->\s*\n)?^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```",
    re.S | re.M,
)
MODEL_STRING = re.compile(
    r"""(["'])(?:openai|anthropic|together|gemini|groq|bedrock|vllm|sglang|llamacpp):[^"']*\1"""
)
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    body: str
    mark: str
    before: str  # the Python blocks of the page before this one, for "continues"

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for page in PAGES:
        text = page.read_text()
        python: list[str] = []
        for m in FENCE.finditer(text):
            lang, body, mark = m.group("lang"), m.group("body"), m.group("mark") or ""
            line = text.count("\n", 0, m.start("body"))
            if lang == "python":
                before = python[-1] if mark == "continues" and python else ""
                python.append(before + body)
            else:
                before = ""
            if lang in ("python", "bash", "yaml"):
                out.append(Block(page, line, lang, body, mark, before))
    return out


BLOCKS = blocks()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    server = StandinServer(StandinConfig(time_scale=0), port=free_port())
    with server.in_thread():
        yield server.base_url


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh directory where the repository's examples and benchmarks are at hand."""
    for name in ("examples", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def environment(tmp: Path, standin: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PONDER_", "OPENAI_"))}
    env.update(
        PONDER_STANDIN=standin,
        PONDER_ARCHON_URL=standin,
        PONDER_CACHE_PATH=str(tmp / "cache.sqlite"),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
    )
    return env


def swap_models(text: str, standin: str) -> str:
    return MODEL_STRING.sub(lambda m: f"{m.group(1)}vllm:strong@{standin}{m.group(1)}", text)


def local_urls(text: str, standin: str) -> str:
    host = standin.removeprefix("http://").removesuffix("/v1")
    return text.replace("http://127.0.0.1:8000/v1", standin).replace("127.0.0.1:8000", host)


def run(cmd: list[str], env: dict[str, str], cwd: Path, what: str) -> str:
    done = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{what} exited {done.returncode}:\n{output[-3000:]}"
    for bad in ("Traceback", "Unclosed client session", "Unclosed connector"):
        assert bad not in output, f"{what}: {bad}\n{output[-3000:]}"
    return done.stdout


class Served:
    """``ponder serve`` as a reader starts it, on a free port, until the block is done."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        if "--port" in argv:
            argv[argv.index("--port") + 1] = str(self.port)
        else:
            argv += ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                self.stop()
                pytest.fail(f"{' '.join(argv)} did not start:\n{out[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def shell_lines(body: str) -> list[str]:
    joined = body.replace("\\\n", " ")
    out = []
    for raw in joined.splitlines():
        line = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            out.append(line)
    return out


def expand(word: str, cwd: Path) -> list[str]:
    """A shell's glob expansion (an unmatched pattern stays as it is)."""
    if "*" not in word:
        return [word]
    found = sorted(str(p.relative_to(cwd)) for p in cwd.glob(word))
    return found or [word]


def run_shell(block: Block, env: dict[str, str], cwd: Path, standin: str) -> None:
    served: list[Served] = []
    try:
        for line in shell_lines(block.body):
            if line.startswith(("pip install", "./dev")):
                continue  # what CI itself runs
            line = local_urls(line, standin)
            if block.mark == "standin":
                line = swap_models(line, standin)
            words = [w for word in shlex.split(line) for w in expand(word, cwd)]
            if words[0] == "export":
                key, _, value = words[1].partition("=")
                env[key] = value
                continue
            local_env = dict(env)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                key, _, value = words.pop(0).partition("=")
                local_env[key] = value
            if words[-1] == "&":
                words.pop()
            if words[:2] == ["ponder", "standin"]:
                continue  # the test's stand-in serves
            if words[0] in ("ponder", "python"):
                words[0] = str(BIN / words[0]) if words[0] == "ponder" else sys.executable
            if words[1:2] == ["serve"]:
                served.append(Served(words, local_env, cwd))
                continue
            target = None
            if ">" in words:  # a redirect of the output to a file
                at = words.index(">")
                words, target = words[:at], words[at + 1]
            out = run(words, local_env, cwd, f"{block.id}: {line}")
            if target is not None:
                (cwd / target).write_text(out)
    finally:
        for s in served:
            s.stop()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_docs_block_runs(block: Block, standin: str, workdir: Path) -> None:
    if block.mark.startswith("skip"):
        pytest.skip(block.mark.removeprefix("skip").strip() or "marked skip")
    env = environment(workdir, standin)
    if block.lang == "yaml":
        first = block.body.splitlines()[0]
        named = re.fullmatch(r"# (examples/\S+\.ya?ml)", first)
        if named:
            shipped = (ROOT / named.group(1)).read_text()
            assert block.body.split("\n", 1)[1] in shipped, f"{block.id} differs from the file"
        path = workdir / "block.yaml"
        path.write_text(local_urls(block.body, standin))
        os.environ.setdefault("PONDER_STANDIN", standin)
        load_spec(path)
        return
    if block.lang == "bash":
        run_shell(block, env, workdir, standin)
        return
    code = block.before + block.body
    code = local_urls(code, standin)
    if block.mark == "standin":
        code = swap_models(code, standin)
    served = None
    if block.mark == "serve":
        env["PONDER_SERVE_API_KEYS"] = "sk-k1,sk-k2"
        served = Served([str(BIN / "ponder"), "serve", "--workflows", "examples/workflows"],
                        env, workdir)  # fmt: skip
        code = code.replace("127.0.0.1:8080", f"127.0.0.1:{served.port}")
    script = workdir / "block.py"
    script.write_text(code)
    try:
        out = run([sys.executable, str(script)], env, workdir, block.id)
    finally:
        if served is not None:
            served.stop()
    assert "None" not in out.splitlines(), f"{block.id} printed None:\n{out}"


def test_every_page_has_its_blocks_found() -> None:
    assert len(BLOCKS) > 30
    assert {b.page.name for b in BLOCKS} >= {"README.md", "workflows.md", "memory.md"}


def test_every_file_a_page_names_is_shipped() -> None:
    named = re.compile(r"(?<![\w/.])((?:examples|benchmarks|docs|tests|ponder)/[\w./-]+\.\w+)")
    missing = []
    for page in PAGES:
        for m in named.finditer(page.read_text()):
            path = m.group(1).rstrip(".")
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "named but not shipped: " + "; ".join(missing)
