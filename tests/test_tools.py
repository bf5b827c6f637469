"""The code-execution sandbox and the calculator: limits really hold."""

from __future__ import annotations

import pytest

from ponder.errors import ToolExecutionError
from ponder.tools import SandboxLimits, calculate, network_namespace_available, run_python

FAST = SandboxLimits(timeout=3, cpu_seconds=5, memory_mb=256)


async def test_runs_code_with_stdin_and_files_in_a_private_directory() -> None:
    r = await run_python(
        "import helper, os\nprint(helper.twice(input()), sorted(os.listdir('.')))",
        stdin="21\n",
        files={"helper.py": "def twice(x):\n    return int(x) * 2\n"},
        limits=FAST,
    )
    assert r.ok, r.stderr
    assert r.stdout.startswith("42 ")
    assert "main.py" in r.stdout


async def test_wall_clock_timeout_kills_the_process_group() -> None:
    r = await run_python("import time\nwhile True: time.sleep(0.01)", limits=FAST)
    assert r.timed_out
    assert r.killed_reason == "wall-clock timeout of 3.0s"
    assert not r.ok


async def test_a_busy_loop_hits_the_cpu_limit() -> None:
    lim = SandboxLimits(timeout=30, cpu_seconds=1)
    r = await run_python("while True: pass", limits=lim)
    assert r.killed_reason is not None
    # the run's CPU counter (a cgroup, as root) or the process's RLIMIT_CPU
    assert r.killed_reason.startswith("CPU limit of 1s")


async def test_memory_limit() -> None:
    r = await run_python("x = bytearray(3_000_000_000)", limits=FAST)
    assert not r.ok
    assert r.killed_reason == "memory limit of 256 MiB"


async def test_printing_gigabytes_is_cut_at_the_output_limit() -> None:
    lim = SandboxLimits(timeout=10, max_output_bytes=10_000)
    r = await run_python("while True: print('x' * 1000)", limits=lim)
    assert r.killed_reason == "output limit of 10000 bytes"
    assert r.output_truncated
    assert len(r.stdout) <= 10_000


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", "socket"),
        ("import urllib.request\nurllib.request.urlopen('http://example.com')", "socket"),
        ("print(open('/etc/hostname').read())", "no access to /etc/hostname"),
        ("open('/usr/ponder-escape.txt', 'w').write('x')", "no access to /usr/ponder-escape"),
        ("import os\nprint(os.listdir('/'))", "no access to /"),
        ("import os\nos.chdir('..')", "no access to"),
        ("import subprocess\nsubprocess.run(['ls'])", "subprocess.Popen is not allowed"),
        ("import os\nos.system('ls')", "os.system is not allowed"),
        ("import os\nos.fork()", "os.fork is not allowed"),
        ("import ctypes\nctypes.CDLL(None)", "ctypes.dlopen is not allowed"),
    ],
)
async def test_no_network_no_files_outside_no_processes(code: str, refused: str) -> None:
    r = await run_python(code, limits=FAST)
    assert r.exit_code == 1
    assert refused in r.stderr


async def test_no_secrets_leak_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    r = await run_python("import os\nprint(sorted(os.environ))", limits=FAST)
    assert "OPENAI_API_KEY" not in r.stdout


async def test_network_namespace_is_used_where_the_kernel_allows() -> None:
    # with a namespace even loopback is unreachable; without one the audit hook refuses
    assert isinstance(network_namespace_available(), bool)


async def test_a_file_outside_the_directory_is_refused_before_running() -> None:
    with pytest.raises(ToolExecutionError, match="outside its directory"):
        await run_python("print(1)", files={"../evil.py": "x"})


def test_calculator_is_exact_and_refuses_code() -> None:
    assert calculate("2^10 + 1/3") == "3073/3"
    assert calculate("(17 * 23) - 1") == "390"
    assert calculate("sqrt(16)") == "4.0"
    with pytest.raises(ToolExecutionError, match="not allowed"):
        calculate("__import__('os').system('ls')")
    with pytest.raises(ToolExecutionError, match="division by zero"):
        calculate("1/0")
    with pytest.raises(ToolExecutionError, match="too large"):
        calculate("2**100000")
    with pytest.raises(ToolExecutionError, match="not an arithmetic expression"):
        calculate("2 +")
