"""An attacker's code against the sandbox: every escape tried for real, with the
Python-level audit hook switched off first (as plain Python can), so each test shows
that the operating-system boundary holds. Each asserts the attempt failed and that the
host is unchanged: files, processes, sockets."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import processes_with

from ponder.errors import ToolExecutionError
from ponder.tools import RunResult, SandboxLimits, run_python, seccomp_filter

LIMITS = SandboxLimits(timeout=10, cpu_seconds=5, memory_mb=512)

# The escape of the audit-hook sandbox: the bootstrap's globals are one frame up.
BYPASS = """
import sys, json
_g = sys._getframe(1).f_globals
_g["_DENY"].clear()
_g["_inside"] = lambda *a: True
_g["_readable"] = lambda *a: True
out = {}
def attempt(name, fn):
    try:
        out[name] = ["ok", repr(fn())[:300]]
    except BaseException as e:
        out[name] = ["failed", f"{type(e).__name__}: {e}"[:300]]
"""
REPORT = "\nprint('RESULT ' + json.dumps(out))\n"
# raw system calls through libc, past every Python-level check
SYSCALL = (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def sc(nr, *a):\n"
    "    if libc.syscall(nr, *a) == -1:\n"
    "        raise OSError(ctypes.get_errno(), f'syscall {nr} refused')\n"
)


pytestmark = pytest.mark.usefixtures("os_sandbox")


async def attack(body: str, **kw: Any) -> dict[str, list[str]]:
    r = await run_python(BYPASS + body + REPORT, limits=kw.pop("limits", LIMITS), **kw)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, f"no result: exit {r.exit_code}, {r.killed_reason}, {r.stderr}"
    return dict(json.loads(line[len("RESULT ") :]))


SYSTEM_ROOTS = {
    "usr",
    "bin",
    "sbin",
    "lib",
    "lib32",
    "lib64",
    "libx32",
    "etc",
    "proc",
    "dev",
    "box",
    "tmp",
}


def bound_roots() -> set[str]:
    """Top-level directories of what the sandbox binds: the interpreter's prefix and the
    site-packages directories (a venv may live anywhere, e.g. /check/.venv on CI)."""
    paths = [sys.prefix, sys.base_prefix, os.path.realpath(sys.base_prefix)]
    paths += [
        os.path.realpath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))
    ]
    return {Path(p).parts[1] for p in paths if len(Path(p).parts) > 1}


def failed(result: dict[str, list[str]], *names: str) -> None:
    for n in names:
        assert result[n][0] == "failed", f"{n} succeeded: {result[n][1]}"


def host_processes_with(token: str) -> list[int]:
    return processes_with(token)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-" + secrets.token_hex(8))
    return path


def exists(path: Path) -> bool:
    return path.exists()


def read(path: Path) -> bytes:
    return path.read_bytes()


# -- the hook is not the boundary ---------------------------------------------------------


async def test_the_hook_can_be_switched_off_but_host_files_stay_unreadable(
    secret_file: Path,
) -> None:
    beside = Path(__file__).with_name("conftest.py")  # a file next to the calling code
    r = await attack(
        f"attempt('secret', lambda: open({str(secret_file)!r}).read())\n"
        f"attempt('beside', lambda: open({str(beside)!r}).read())\n"
        "attempt('passwd', lambda: open('/etc/passwd').read())\n"
        f"attempt('project', lambda: __import__('os').listdir({os.getcwd()!r}))\n"
        "attempt('root', lambda: __import__('os').listdir('/'))\n"
        "attempt('hook_off', lambda: open('/proc/self/status').read()[:10])\n"
    )
    assert r["hook_off"][0] == "ok"  # the audit hook really is off
    failed(r, "secret", "beside", "passwd")
    # the project is not there: at most the empty path to the bound site-packages
    assert r["project"][0] == "failed" or "pyproject" not in r["project"][1]
    # the root holds only what was bound read-only: the system, the interpreter and its
    # libraries (wherever the checkout's venv lives), the box
    assert set(eval(r["root"][1])) <= SYSTEM_ROOTS | bound_roots()
    assert "TOP-SECRET" not in json.dumps(r)


async def test_writes_outside_the_working_directory_do_not_reach_the_host(
    tmp_path: Path,
) -> None:
    token = secrets.token_hex(6)
    targets = [tmp_path / "escape.txt", Path(f"/tmp/ponder-escape-{token}")]
    body = "".join(
        f"attempt('w{i}', lambda: open({str(t)!r}, 'w').write('x'))\n"
        for i, t in enumerate(targets)
    )
    await attack(body)
    for t in targets:
        assert not exists(t)


async def test_processes_run_only_inside_as_nobody() -> None:
    r = await attack(
        "import subprocess, _posixsubprocess, os\n"
        "attempt('id', lambda: subprocess.run(['id'], capture_output=True, text=True).stdout)\n"
        "attempt('sh', lambda: subprocess.run(['/bin/sh', '-c', 'cat /proc/1/cmdline; "
        "ls /proc | wc -l'], capture_output=True, text=True).stdout)\n"
    )
    assert r["id"][0] == "ok", r["id"]  # with the hook off, processes start...
    assert "uid=65534" in r["id"][1]  # ...as nobody
    assert r["sh"][0] == "ok", r["sh"]
    assert "bwrap" in r["sh"][1]  # PID 1 is the sandbox's own init, not the host's


async def test_posixsubprocess_fork_exec_cannot_touch_the_host(secret_file: Path) -> None:
    """``_posixsubprocess.fork_exec`` raises no audit event: it starts /bin/sh with no
    Python-level check at all. The shell runs, inside, and finds no host file."""
    marker = secret_file.parent / "forked.txt"
    script = f"cat {secret_file}; echo pwned > {marker}; id -u"
    r = await attack(
        "import _posixsubprocess, os\n"
        "def spawn():\n"
        "    out_r, out_w = os.pipe()\n"
        "    err_r, err_w = os.pipe()\n"
        "    pid = _posixsubprocess.fork_exec(\n"
        f"        [b'/bin/sh', b'-c', {script.encode()!r}], [b'/bin/sh'], True, (out_w,),\n"
        "        None, None, -1, -1, -1, out_w, -1, -1, err_r, err_w, True, False, -1,\n"
        "        None, None, None, -1, None, False)\n"
        "    os.close(out_w); os.close(err_w)\n"
        "    os.waitpid(pid, 0)\n"
        "    return os.read(out_r, 4096).decode()\n"
        "attempt('fork_exec', spawn)\n"
    )
    assert r["fork_exec"][0] == "ok", r["fork_exec"]  # the shell really started...
    assert "TOP-SECRET" not in r["fork_exec"][1]  # ...saw no host file...
    assert "65534" in r["fork_exec"][1]  # ...ran as nobody...
    assert not exists(marker)  # ...and wrote nothing on the host


async def test_a_detached_child_does_not_outlive_the_run() -> None:
    token = f"ponder-orphan-{secrets.token_hex(6)}"
    r = await attack(
        "import subprocess, sys\n"
        "attempt('detach', lambda: subprocess.Popen([sys.executable, '-c', "
        f"'import time; time.sleep(30)  # {token}'], start_new_session=True).pid)\n"
    )
    assert r["detach"][0] == "ok"  # it started inside...
    for _ in range(50):
        if not host_processes_with(token):
            break
        await asyncio.sleep(0.1)
    assert host_processes_with(token) == []  # ...and ended with the run


async def test_a_fork_bomb_stops_at_the_process_limit() -> None:
    lim = SandboxLimits(timeout=5, cpu_seconds=5, max_processes=16)
    r = await run_python(
        BYPASS
        + "import os, time\n"
        + "n = 0\n"
        + "try:\n"
        + "    while True:\n"
        + "        if os.fork() == 0:\n"
        + "            time.sleep(20)\n"
        + "            os._exit(0)\n"
        + "        n += 1\n"
        + "except OSError as e:\n"
        + "    print('stopped after', n, type(e).__name__)\n",
        limits=lim,
    )
    assert "stopped after" in r.stdout
    assert int(r.stdout.split()[2]) < 16
    # nothing of it is left: no sandboxed process at all (the bomb's children sleep 20 s)
    for _ in range(50):
        if not host_processes_with("_ponder_bootstrap.py"):
            break
        await asyncio.sleep(0.1)
    assert host_processes_with("_ponder_bootstrap.py") == []


# -- planting code for later runs ----------------------------------------------------------


async def test_pth_and_sitecustomize_cannot_be_planted() -> None:
    site = [p for p in sys.path if p.endswith("site-packages")]
    token = secrets.token_hex(6)
    targets = [Path(site[0]) / f"ponder-evil-{token}.pth"] if site else []
    targets.append(Path(sys.base_prefix) / "lib" / f"sitecustomize_{token}.py")
    body = "import os\n" + "".join(
        f"attempt('t{i}', lambda: os.open({str(t)!r}, os.O_WRONLY | os.O_CREAT, 0o644))\n"
        for i, t in enumerate(targets)
    )
    r = await attack(body)
    failed(r, *[f"t{i}" for i in range(len(targets))])
    for t in targets:
        assert not exists(t)
    assert "Read-only file system" in json.dumps(r)


async def test_os_open_with_every_flag_never_reaches_a_host_file(secret_file: Path) -> None:
    before = read(secret_file)
    flags = {
        "rdonly": "os.O_RDONLY",
        "wronly": "os.O_WRONLY",
        "rdwr": "os.O_RDWR",
        "creat": "os.O_WRONLY | os.O_CREAT",
        "trunc": "os.O_WRONLY | os.O_TRUNC",
        "append": "os.O_WRONLY | os.O_APPEND",
        "path": "os.O_PATH",
        "nofollow": "os.O_RDONLY | os.O_NOFOLLOW",
        "tmpfile": "os.O_TMPFILE | os.O_WRONLY",
    }
    body = "import os\n"
    for name, f in flags.items():
        target = secret_file.parent if name == "tmpfile" else secret_file
        body += f"attempt({name!r}, lambda: os.open({str(target)!r}, {f}))\n"
    body += "attempt('usr_write', lambda: os.open('/usr/bin/env', os.O_WRONLY))\n"
    r = await attack(body)
    failed(r, *flags, "usr_write")
    assert read(secret_file) == before


async def test_symlinks_and_hard_links_do_not_lead_out(secret_file: Path) -> None:
    r = await attack(
        "import os\n"
        f"os.symlink({str(secret_file)!r}, 'link')\n"
        "attempt('symlink', lambda: open('link').read())\n"
        f"attempt('hardlink', lambda: os.link({str(secret_file)!r}, 'hard'))\n"
        "attempt('proc_root', lambda: open('/proc/1/root" + str(secret_file) + "').read())\n"
    )
    failed(r, "symlink", "hardlink", "proc_root")
    assert "TOP-SECRET" not in json.dumps(r)


async def test_dev_shm_is_private() -> None:
    token = secrets.token_hex(6)
    await attack(f"attempt('shm', lambda: open('/dev/shm/ponder-{token}', 'w').write('x'))\n")
    assert not exists(Path(f"/dev/shm/ponder-{token}"))


# -- secrets, processes and the kernel ----------------------------------------------------


async def test_no_secret_in_the_environment_or_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ponder-secret")
    r = await attack(
        "import os\n"
        "attempt('env', lambda: dict(os.environ))\n"
        "attempt('self', lambda: open('/proc/self/environ', 'rb').read())\n"
        "attempt('init', lambda: open('/proc/1/environ', 'rb').read())\n"
        "attempt('procs', lambda: sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    assert "sk-ponder-secret" not in json.dumps(r)
    assert len(json.loads(r["procs"][1].replace("'", '"'))) < 10  # no host processes seen


async def test_ptrace_and_signals_cannot_reach_the_parent() -> None:
    me = os.getpid()
    r = await attack(
        "import ctypes, os, signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def ptrace(pid):\n"
        "    if libc.ptrace(16, pid, 0, 0) != 0:\n"  # PTRACE_ATTACH
        "        raise OSError(ctypes.get_errno(), 'ptrace refused')\n"
        f"attempt('ptrace_parent', lambda: ptrace({me}))\n"
        "attempt('ptrace_1', lambda: ptrace(1))\n"
        f"attempt('kill_parent', lambda: os.kill({me}, signal.SIGKILL))\n"
        "attempt('kill_ppid', lambda: os.kill(os.getppid(), signal.SIGKILL) if os.getppid() > 1"
        " else (_ for _ in ()).throw(OSError('no parent visible')))\n"
    )
    failed(r, "ptrace_parent", "ptrace_1", "kill_parent")
    assert os.getpid() == me  # still here


async def test_ctypes_syscalls_the_filter_refuses() -> None:
    if seccomp_filter() is None:
        pytest.skip("the seccomp filter is x86-64 only")
    r = await attack(
        SYSCALL + "attempt('unshare', lambda: sc(272, 0x10000000))\n"  # CLONE_NEWUSER
        "attempt('mount', lambda: sc(165, b'none', b'/box', b'tmpfs', 0, 0))\n"
        "attempt('keyctl', lambda: sc(250, 0, 0, 0, 0))\n"
        "attempt('bpf', lambda: sc(321, 0, 0, 0))\n"
        "attempt('io_uring', lambda: sc(425, 1, 0))\n"
        "attempt('userfaultfd', lambda: sc(323, 0))\n"
    )
    failed(r, "unshare", "mount", "keyctl", "bpf", "io_uring", "userfaultfd")
    assert "Operation not permitted" in r["keyctl"][1] or "1" in r["keyctl"][1]


# -- the network ---------------------------------------------------------------------------


async def test_no_network_to_host_loopback_dns_or_abstract_sockets() -> None:
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.setblocking(False)
    port = tcp.getsockname()[1]
    name = f"ponder-abstract-{secrets.token_hex(6)}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + name)
    unix.listen()
    unix.setblocking(False)
    try:
        r = await attack(
            "import socket\n"
            f"attempt('tcp', lambda: socket.create_connection(('127.0.0.1', {port}), 2))\n"
            "attempt('dns', lambda: socket.getaddrinfo('example.com', 80))\n"
            "def abstract():\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"    s.connect('\\0{name}')\n"
            "attempt('abstract', abstract)\n"
            "attempt('outside', lambda: socket.create_connection(('1.1.1.1', 53), 2))\n"
        )
        failed(r, "tcp", "dns", "abstract", "outside")
        for s in (tcp, unix):
            with pytest.raises(BlockingIOError):
                s.accept()  # nobody connected
    finally:
        tcp.close()
        unix.close()


# -- the weak mode is an explicit choice ------------------------------------------------


async def test_without_bubblewrap_untrusted_code_is_refused_unless_weak_is_chosen(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ponder.tools import _sandbox

    monkeypatch.setattr(_sandbox, "sandbox_unavailable_reason", lambda: "no bwrap (test)")
    with pytest.raises(ToolExecutionError, match="refusing to run untrusted code"):
        await run_python("print(1)", limits=LIMITS)
    monkeypatch.setitem(_sandbox._weak, "warned", False)
    weak_limits = LIMITS.model_copy(update={"isolation": "weak"})
    if os.geteuid() == 0:  # never host root: the weak mode would run the code as root
        with pytest.raises(ToolExecutionError, match="refusing to run untrusted code as root"):
            await run_python("print(1)", limits=weak_limits)
        return
    weak = await run_python("print(1)", limits=weak_limits)
    assert weak.ok
    assert "WEAK sandbox" in caplog.text


# -- second set: never host root, limits per run, the edge of the box -------------------


def host_uids_of(token: str) -> set[int]:
    """The host uids of the processes whose command line holds ``token``."""
    uids = set()
    for pid in host_processes_with(token):
        try:
            status = read(Path(f"/proc/{pid}/status")).decode()
        except OSError:
            continue
        uids.add(int(status.split("Uid:")[1].split()[0]))
    return uids


async def test_the_sandboxed_code_is_never_host_root() -> None:
    """Host-side evidence: the process that runs the code has an unprivileged host uid
    (Ponder's own when it is not root, nobody's when it is)."""
    token = f"ponder-uid-{secrets.token_hex(6)}"
    body = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', 'import time; time.sleep(3)  # {token}'])\n"
    )
    task = asyncio.ensure_future(attack(body))
    uids: set[int] = set()
    for _ in range(60):
        await asyncio.sleep(0.05)
        uids |= host_uids_of(token)
        if uids:
            break
    await task
    assert uids, "the sandboxed process was never seen"
    assert 0 not in uids
    assert uids == ({65534} if os.geteuid() == 0 else {os.getuid()})


def _stat(path: str) -> tuple[int, int, list[str]]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_atime_ns, os.listxattr(path)


async def test_kernel_settings_host_binaries_and_root_only_files_are_out_of_reach() -> None:
    sysctl = Path("/proc/sys/vm/max_map_count")
    before, bwrap_before = read(sysctl), _stat("/usr/bin/bwrap")
    r = await attack(
        "import os\n"
        "attempt('sysctl', lambda: open('/proc/sys/vm/max_map_count', 'w').write('65531'))\n"
        "attempt('core_pattern', lambda: open('/proc/sys/kernel/core_pattern', 'w'))\n"
        "attempt('exe_utime', lambda: os.utime('/proc/1/exe', (0, 0)))\n"
        "attempt('exe_xattr', lambda: os.setxattr('/proc/1/exe', 'user.ponder', b'x'))\n"
        "attempt('exe_write', lambda: open('/proc/1/exe', 'r+b'))\n"
        + "".join(
            f"attempt({name!r}, lambda: open('/proc/{name}', 'rb').read(16))\n"
            for name in ("kpageflags", "slabinfo", "timer_list", "vmallocinfo")
        )
    )
    failed(r, "sysctl", "core_pattern", "exe_utime", "exe_xattr", "exe_write")
    failed(r, "kpageflags", "slabinfo", "timer_list", "vmallocinfo")
    assert read(sysctl) == before
    assert _stat("/usr/bin/bwrap") == bwrap_before


async def test_the_python_tool_is_not_host_root_either() -> None:
    from ponder.tools import python_tool
    from ponder.types import ToolCall

    code = (
        BYPASS
        + "attempt('w', lambda: open('/proc/sys/vm/max_map_count', 'w').write('65531'))\n"
        + "attempt('uid', lambda: open('/proc/self/uid_map').read())\n"
        + REPORT
    )
    out = await python_tool().call(
        ToolCall(id="c1", name="python", arguments=json.dumps({"code": code}))
    )
    text = out.content
    assert "RESULT " in text, text
    result = json.loads(text[text.index("RESULT ") + 7 :].splitlines()[0])
    failed(result, "w")
    if os.geteuid() == 0:  # the host id behind the sandbox's uid is nobody's, not root's
        assert result["uid"][1].split()[1] == "65534"


async def test_stdin_the_code_never_reads_cannot_stretch_the_timeout() -> None:
    lim = SandboxLimits(timeout=2, cpu_seconds=5)
    r = await run_python("import time\ntime.sleep(30)\n", stdin="x" * (1 << 20), limits=lim)
    assert r.timed_out  # the wait began at once: the unread stdin did not hold it off


async def test_every_writable_place_counts_against_one_disk_budget() -> None:
    lim = SandboxLimits(timeout=20, cpu_seconds=10, disk_mb=16, memory_mb=256)
    r = await attack(
        "import os\n"
        "def fill(path):\n"
        "    n = 0\n"
        "    try:\n"
        "        with open(path, 'wb') as f:\n"
        "            for _ in range(64):\n"
        "                f.write(b'x' * (1 << 20)); f.flush(); n += 1\n"
        "    except OSError:\n"
        "        pass\n"
        "    return n\n"
        "for name, path in (('root', '/fill'), ('shm', '/dev/shm/fill'), ('tmp', '/tmp/fill'),"
        " ('dev', '/dev/fill'), ('box', 'fill')):\n"
        "    attempt(name, lambda path=path: fill(path))\n",
        limits=lim,
    )
    written = sum(int(v[1]) for v in r.values() if v[0] == "ok")
    assert written <= 16, r


def _per_run_limits() -> None:
    from ponder.tools._as_root import RunCgroup

    if os.geteuid() != 0:
        pytest.skip(
            "per-run memory and CPU need a cgroup, which only root can make here; "
            "as a normal user the documented per-process limits apply"
        )
    lim = SandboxLimits()
    cg = RunCgroup.make((lim.memory_mb + lim.disk_mb) * 1024 * 1024, lim.max_processes)
    if cg is None:
        why = "no cgroup can be made here (read-only or delegated cgroupfs)"
        if os.environ.get("CI"):  # this project's CI makes them: a regression, not a host
            pytest.fail(f"running as root, the sandbox must get a cgroup: {why}")
        pytest.skip(f"{why}; the documented per-process limits apply")
    cg.remove()


async def per_run(code: str, **limits: int) -> RunResult:
    """``code`` (past the Python-level guard) under per-run limits: 20 s, 10 CPU seconds,
    16 MB of disk, 64 MB of memory, unless ``limits`` say otherwise."""
    _per_run_limits()
    lim = {"timeout": 20, "cpu_seconds": 10, "memory_mb": 64, "disk_mb": 16, **limits}
    return await run_python(BYPASS + code, limits=SandboxLimits(**lim))


async def test_memfds_count_against_the_run_s_memory() -> None:
    r = await per_run(
        # 35 memfds of 9 MiB each (under the 10 MB file-size limit): 315 MiB in all
        "import os\nfds = []\n"
        "for i in range(35):\n"
        "    fd = os.memfd_create(f'm{i}')\n"
        "    for _ in range(9):\n"
        "        os.write(fd, b'x' * (1 << 20))\n"
        "    fds.append(fd)\n"
        "print('WROTE 315 MiB')\n"
    )
    assert "WROTE" not in r.stdout
    assert r.killed_reason is not None
    assert "memory" in r.killed_reason


async def test_children_count_against_the_run_s_memory() -> None:
    kids = await per_run(
        "import os, time\n"
        "pids = []\n"
        "for _ in range(5):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        b = bytearray(100 << 20)\n"
        "        for i in range(0, len(b), 4096): b[i] = 1\n"
        "        time.sleep(2); os._exit(0)\n"
        "    pids.append(pid)\n"
        "ok = sum(os.waitpid(p, 0)[1] == 0 for p in pids)\n"
        "print('CHILDREN OK', ok)\n",
        memory_mb=128,
    )
    # 5 x 100 MiB does not fit in 128 MiB: the run is stopped, or children die
    assert "CHILDREN OK 5" not in kids.stdout


async def test_cpu_time_counts_for_the_whole_run() -> None:
    r = await per_run(
        "import os\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        while True: pass\n"
        "os.wait()\n",
        cpu_seconds=1,
        memory_mb=512,
        disk_mb=64,
    )
    assert r.killed_reason is not None
    assert "all processes of the run" in r.killed_reason  # counted together, not per child


async def test_inotify_cannot_watch_the_host() -> None:
    if seccomp_filter() is None:
        pytest.skip("the seccomp filter is x86-64 only")
    r = await attack(
        SYSCALL + "attempt('inotify_init1', lambda: sc(294, 0))\n"
        "attempt('inotify_init', lambda: sc(253))\n"
    )
    failed(r, "inotify_init1", "inotify_init")


# -- the whole suite again, as a normal user -----------------------------------------------

_AS_NOBODY = r"""
set -e
# the interpreter may live under /root (pyenv), which uid 65534 cannot traverse: in this
# private mount namespace, /root becomes a world-readable tmpfs holding only it
if [ -n "$PONDER_PYENV" ]; then
  stage=$(mktemp -d)
  mount --bind /root "$stage"
  mount -t tmpfs -o mode=0755 ponder-root /root
  mkdir -p "/root/$PONDER_PYENV"
  mount --bind "$stage/$PONDER_PYENV" "/root/$PONDER_PYENV"
fi
exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"
"""


def test_the_escape_suite_passes_as_a_normal_user() -> None:
    """Every attack of this file, run by an unprivileged user (uid 65534): bubblewrap then
    makes its own user namespace, and per-run memory and CPU fall back to rlimits (those
    two tests skip, saying so)."""
    import shutil
    import subprocess
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("already running as a normal user: this file's other tests are that run")
    base = os.path.realpath(sys.base_prefix)
    pyenv = ""
    if base.startswith("/root/"):
        pyenv = base[len("/root/") :].split("/", 1)[0]  # e.g. .pyenv
    root = Path(__file__).resolve().parent.parent
    for p in [root, *root.parents, Path(sys.prefix).resolve()]:
        if p != Path("/root") and not p.is_relative_to("/root") and not os.access(p, os.X_OK):
            pytest.skip(f"{p} is not reachable by other users here")
    home = Path(tempfile.mkdtemp(prefix="ponder-nobody-"))  # pytest's tmp is root's only
    shutil.chown(home, 65534, 65534)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PONDER_PYENV": pyenv,
    }
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
             _AS_NOBODY, "sh", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--rootdir", str(root), "--basetemp", str(home / "pytest"),
             "-k", "not as_a_normal_user", str(root / "tests" / "test_sandbox_escapes.py"),
             str(root / "tests" / "test_checked.py")],
            capture_output=True, text=True, timeout=600, check=False, env=env, cwd=str(home),
        )  # fmt: skip
    finally:
        shutil.rmtree(home, ignore_errors=True)
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert " passed" in done.stdout
    assert "failed" not in done.stdout.splitlines()[-1], tail
