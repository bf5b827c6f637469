"""Run untrusted generated Python in a subprocess it cannot escape from.

The boundary is the operating system (docs/tools.md has the threat model):

* **bubblewrap** (Debian's ``bubblewrap``): new user (mapped to ``nobody``), PID,
  network, IPC, UTS and cgroup namespaces, and a mount namespace whose only host paths
  are read-only binds of ``/usr`` (and its ``/bin``, ``/lib`` links), the interpreter and
  the site-packages the code may import. The working directory is a private tmpfs of
  bounded size (``HOME`` and ``TMPDIR`` too); ``/proc`` is the sandbox's own, ``/dev`` a
  minimal one. No capabilities, no new user namespaces inside (``--disable-userns``),
  ``--die-with-parent`` and a new session: when the run ends, the PID namespace ends
  with it, so nothing outlives it.
* **seccomp**: a filter that refuses system calls no generated program needs and that
  widen the kernel's attack surface beyond what namespaces isolate (ptrace and
  process_vm_*, keyrings, bpf, perf_event_open, userfaultfd, io_uring, the mount API,
  module loading, kexec, open_by_handle_at, personality, and the x32 ABI).
* **rlimits**: CPU seconds, address space, file size, open files, processes (per user
  namespace, so a fork bomb stops at the bound), no core dumps; a wall-clock timeout
  kills the whole sandbox; output is read up to a bound.
* **An audit hook** (second layer, never the boundary): refuses process creation,
  ctypes, sockets and paths outside the working directory from Python, with readable
  messages. Python code can switch it off; the layers above still hold.

Where bubblewrap cannot run (not installed, no user namespaces, macOS), ``run_python``
refuses to run untrusted code unless the weaker mode is chosen explicitly
(``SandboxLimits(isolation="weak")`` or :func:`allow_weak_sandbox`): ``unshare -Urn``
where the kernel allows it, plus the audit hook and the rlimits. It warns once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import ToolExecutionError
from ponder.tools._as_root import SANDBOX_UID, RunCgroup, as_root, drop_argv, give_to_sandbox
from ponder.tools._seccomp import seccomp_filter

__all__ = [
    "RunResult",
    "SandboxLimits",
    "SandboxProcess",
    "allow_weak_sandbox",
    "network_namespace_available",
    "open_sandbox",
    "run_python",
    "sandbox_unavailable_reason",
    "seccomp_filter",
]

log = logging.getLogger("ponder")

Isolation = Literal["os", "weak"]


class SandboxLimits(BaseModel):
    """Limits of one run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(10.0, gt=0, description="Wall-clock seconds before the kill.")
    cpu_seconds: int = Field(10, ge=1)
    memory_mb: int = Field(512, ge=32, description="Address space, in MiB.")
    max_output_bytes: int = Field(1_000_000, ge=1024, description="stdout + stderr.")
    max_file_bytes: int = Field(10_000_000, ge=0, description="Largest file it may write.")
    max_open_files: int = Field(64, ge=16)
    max_processes: int = Field(
        32, ge=1, description="Processes and threads of the sandbox (a fork bomb stops here)."
    )
    disk_mb: int = Field(64, ge=1, description="Size of the private working directory.")
    isolation: Isolation = Field(
        "os",
        description="'os': bubblewrap namespaces + seccomp (refuses to run without them); "
        "'weak': only unshare -Urn where available + an audit hook (warns once).",
    )
    site_packages: bool = Field(
        True, description="Let the code import the installed libraries (read-only)."
    )
    network_namespace: bool = Field(True, description="Weak mode: use unshare -Urn.")


class RunResult(BaseModel):
    """What a run did. ``ok`` is exit code 0 within every limit."""

    model_config = ConfigDict(frozen=True)

    exit_code: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False
    output_truncated: bool = False
    killed_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None


_BOOTSTRAP = r"""
import os, resource, sys

def _limits(cpu, mem, fsize, nofile, nproc):
    # CPU: SIGXCPU at the soft limit, SIGKILL a second later
    for res, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, mem, mem),
                            (resource.RLIMIT_FSIZE, fsize, fsize),
                            (resource.RLIMIT_NOFILE, nofile, nofile),
                            (resource.RLIMIT_NPROC, nproc, nproc),
                            (resource.RLIMIT_CORE, 0, 0)):
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            pass

_limits({cpu}, {mem}, {fsize}, {nofile}, {nproc})
_IN = {inputs!r}
if _IN is not None:  # OS mode: inputs are a read-only bind; the tmpfs cwd gets a copy
    import shutil
    for _n in os.listdir(_IN):
        if _n != "_ponder_bootstrap.py":
            _s = os.path.join(_IN, _n)
            (shutil.copytree if os.path.isdir(_s) else shutil.copyfile)(_s, _n)
    del shutil
sys.path[:0] = {site!r}
_ROOT = os.path.realpath(os.getcwd())
_READ_OK = tuple({read_ok!r})
_DENY = {{"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
         "os.fork", "os.forkpty", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym",
         "ctypes.cdata", "socket.connect", "socket.bind", "socket.getaddrinfo",
         "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
         "os.kill", "os.killpg", "signal.pthread_kill", "sys.remote_exec"}}
_LISTS = {{"os.listdir", "os.scandir"}}
_PATHS = {{"open": 0, "os.listdir": 0, "os.scandir": 0, "os.chdir": 0, "os.remove": 0,
          "os.rename": 0, "os.mkdir": 0, "os.rmdir": 0, "os.chmod": 0, "os.chown": 0,
          "os.link": 0, "os.symlink": 0, "os.truncate": 0, "os.utime": 0,
          "shutil.rmtree": 0, "shutil.copyfile": 0, "shutil.move": 0}}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return p == _ROOT or p.startswith(_ROOT + os.sep)

def _readable(path, mode, flags):
    if _inside(path):
        return True
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return False
    if isinstance(flags, int) and flags & _WRITE_FLAGS:  # os.open's flags
        return False
    try:
        p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return any(p == r or p.startswith(r + os.sep) for r in _READ_OK)

def _hook(event, args):
    if event in _DENY or event.startswith("os.exec"):
        raise PermissionError(f"sandbox: {{event}} is not allowed")
    if event in _PATHS and args:
        path = args[0]
        if isinstance(path, int):
            return
        if event == "open" or event in _LISTS:
            mode = args[1] if event == "open" and len(args) > 1 else "r"
            flags = args[2] if event == "open" and len(args) > 2 else None
            if not _readable(path, mode, flags):
                raise PermissionError(f"sandbox: no access to {{os.fsdecode(path)}}")
        elif not _inside(path):
            raise PermissionError(f"sandbox: no access to {{os.fsdecode(path)}}")

sys.addaudithook(_hook)
sys.path.insert(0, _ROOT)  # isolated mode leaves the script's directory out
del _limits
sys.argv = ["main.py"]
with open("main.py", "rb") as _f:
    _code = compile(_f.read(), "main.py", "exec")
del _f
exec(_code, {{"__name__": "__main__", "__file__": "main.py"}})
"""

# where the working directory and the inputs are, inside the OS sandbox
_BOX = "/box"
_INPUTS = "/box/.in"


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether ``unshare -Urn`` works here (user + network namespaces)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-Urn", "true"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _interpreter() -> tuple[str, str]:
    """The real interpreter binary (a venv's python is a link to it) and its prefix."""
    return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def _site_dirs() -> list[str]:
    """The installed libraries' directories (site-packages of the venv and the base)."""
    out: list[str] = []
    for p in sys.path:
        if p and os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p):
            rp = os.path.realpath(p)
            if rp not in out:
                out.append(rp)
    return out


def _system_binds() -> list[str]:
    """bwrap arguments for the read-only system: /usr and the merged-usr links."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


@lru_cache(maxsize=1)
def sandbox_unavailable_reason() -> str | None:
    """Why the OS sandbox cannot run here (None when it can): checked once per process by
    starting a trivial bubblewrap sandbox."""
    if sys.platform != "linux":
        return f"bubblewrap needs Linux (this is {sys.platform})"
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    argv = [exe, "--unshare-all", "--unshare-user", "--die-with-parent", *_system_binds()]
    argv += ["--", "/usr/bin/true"]
    stage: Path | None = None
    if as_root():
        missing = [t for t in ("unshare", "setpriv") if shutil.which(t) is None]
        if missing:
            return (
                f"running as root, the sandbox drops to uid {SANDBOX_UID} with util-linux's "
                f"{' and '.join(missing)}, which is missing (apt-get install util-linux)"
            )
        stage = Path(tempfile.mkdtemp(prefix="ponder-stage-"))
        argv = drop_argv(stage, None, [], argv)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap could not start: {e}"
    finally:
        if stage is not None:
            with contextlib.suppress(OSError):
                stage.rmdir()
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        if as_root():
            return (
                f"running as root, the sandbox must run as the unprivileged uid {SANDBOX_UID}, "
                f"and bubblewrap could not start as that user ({why}). Allow unprivileged "
                "user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
                "user.max_user_namespaces > 0), or run Ponder as a non-root user"
            )
        return (
            f"bubblewrap cannot create namespaces here ({why}); unprivileged user namespaces "
            "may be disabled (sysctl kernel.unprivileged_userns_clone=1)"
        )
    return None


_weak = {"allowed": False, "warned": False}


def allow_weak_sandbox(allowed: bool = True) -> None:
    """Let untrusted code run without the OS sandbox where it is unavailable, in the weak
    mode (audit hook + ``unshare -Urn`` where possible), for every run of this process.
    An explicit, documented downgrade; it warns once when first used."""
    _weak["allowed"] = allowed


def _warn_weak(why: str) -> None:
    if not _weak["warned"]:
        _weak["warned"] = True
        log.warning(
            "running untrusted code in the WEAK sandbox (%s): Python-level checks and "
            "rlimits only, which code can get around; install bubblewrap for the OS "
            "sandbox (docs/tools.md)",
            why,
        )


def _bind_sources(lim: SandboxLimits, workdir: Path) -> list[str]:
    """The host directories the sandbox binds besides /usr: the interpreter's prefix, the
    site-packages it may import, and the run's inputs."""
    _exe, prefix = _interpreter()
    out = [prefix]
    if lim.site_packages:
        out += [d for d in _site_dirs() if d != prefix and not d.startswith(prefix + os.sep)]
    return [*out, str(workdir)]


def _bwrap_argv(
    lim: SandboxLimits, workdir: Path, seccomp_fd: int | None, source: dict[str, str]
) -> list[str]:
    """bubblewrap's arguments. ``source`` maps each path of :func:`_bind_sources` to where
    bubblewrap reads it (itself, or its place on the root stage).

    The only writable place is one tmpfs of ``disk_mb`` at /box (the working directory,
    HOME, TMPDIR); /tmp and /dev/shm are links into it (``/box/.tmp``, ``/box/.shm``), so
    every write counts against one budget. The root, /dev and /proc/sys are read-only."""
    exe, prefix = _interpreter()
    argv = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--uid", "65534", "--gid", "65534",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--hostname", "sandbox",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", _BOX,
        "--setenv", "TMPDIR", _BOX,
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONIOENCODING", "utf-8",
        *_system_binds(),
        "--ro-bind", source[prefix], prefix,
        "--proc", "/proc",
        "--ro-bind", "/proc/sys", "/proc/sys",
        # a minimal /dev, read-only: the usual character devices and links
        "--size", str(64 * 1024), "--tmpfs", "/dev",
        *[a for d in ("null", "zero", "full", "random", "urandom")
          for a in ("--dev-bind", f"/dev/{d}", f"/dev/{d}")],
        "--symlink", "/proc/self/fd", "/dev/fd",
        "--symlink", "/proc/self/fd/0", "/dev/stdin",
        "--symlink", "/proc/self/fd/1", "/dev/stdout",
        "--symlink", "/proc/self/fd/2", "/dev/stderr",
        "--symlink", f"{_BOX}/.shm", "/dev/shm",
        "--remount-ro", "/dev",
        "--size", str(lim.disk_mb * 1024 * 1024),
        "--tmpfs", _BOX,
        "--dir", f"{_BOX}/.shm",
        "--dir", f"{_BOX}/.tmp",
        "--symlink", f"{_BOX}/.tmp", "/tmp",
        "--ro-bind", source[str(workdir)], _INPUTS,
    ]  # fmt: skip
    if lim.site_packages:
        for d in _site_dirs():
            if d != prefix and not d.startswith(prefix + os.sep):
                argv += ["--ro-bind", source[d], d]
    argv += ["--remount-ro", "/", "--chdir", _BOX]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", exe, "-I", "-B", "-S", f"{_INPUTS}/_ponder_bootstrap.py"]


async def _read_bounded(
    stream: asyncio.StreamReader, sink: bytearray, budget: list[int], over: asyncio.Event
) -> None:
    """Read to EOF, keeping what fits in the shared budget and discarding the rest (so the
    pipe never stalls); set ``over`` when the budget is exceeded."""
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        room = budget[0]
        if room > 0:
            sink += chunk[:room]
        budget[0] -= len(chunk)
        if budget[0] < 0:
            over.set()


def _weak_read_roots() -> list[str]:
    """Weak mode: what the audit hook lets code read (the interpreter and libraries)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots |= set(_site_dirs())
    roots |= {"/usr/lib", "/usr/local/lib", "/usr/share/zoneinfo", "/dev/null", "/dev/urandom"}
    return sorted(os.path.realpath(r) for r in roots)


def _prepare(code: str, files: dict[str, str], lim: SandboxLimits) -> Path:
    """A fresh private directory holding main.py, the bootstrap and ``files``."""
    workdir = Path(tempfile.mkdtemp(prefix="ponder-sandbox-")).resolve()
    try:
        (workdir / "main.py").write_text(code, encoding="utf-8")
        for name, content in files.items():
            target = (workdir / name).resolve()
            if not target.is_relative_to(workdir):
                raise ToolExecutionError(f"sandbox file {name!r} would land outside its directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        os_mode = lim.isolation == "os"
        _exe, prefix = _interpreter()
        site = _site_dirs() if lim.site_packages else []
        bootstrap = _BOOTSTRAP.format(
            cpu=lim.cpu_seconds,
            mem=lim.memory_mb * 1024 * 1024,
            fsize=lim.max_file_bytes,
            nofile=lim.max_open_files,
            nproc=lim.max_processes,
            inputs=_INPUTS if os_mode else None,
            site=site if os_mode else [],
            read_ok=sorted({prefix, *site, "/usr/lib", "/usr/share/zoneinfo", "/dev/null",
                            "/dev/urandom"}) if os_mode else _weak_read_roots(),
        )  # fmt: skip
        (workdir / "_ponder_bootstrap.py").write_text(bootstrap, encoding="utf-8")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return workdir


@dataclass
class SandboxProcess:
    """A sandboxed interpreter running ``main.py``, with pipes to its stdin, stdout and
    stderr (see :func:`open_sandbox`)."""

    proc: asyncio.subprocess.Process
    limits: SandboxLimits
    cgroup: RunCgroup | None
    start: float

    def kill(self) -> None:
        _kill(self.proc)

    @property
    def bubblewrap(self) -> bool:
        return self.limits.isolation == "os"


@contextlib.asynccontextmanager
async def open_sandbox(
    code: str,
    *,
    files: dict[str, str] | None = None,
    limits: SandboxLimits | None = None,
) -> AsyncIterator[SandboxProcess]:
    """Start ``code`` as ``main.py`` in a fresh private directory, under ``limits``;
    kill it (the whole sandbox) and delete the directory on exit. The caller talks to it
    through the pipes and owns the timeout; :func:`run_python` is the one-shot form."""
    lim = limits or SandboxLimits()
    cgroup: RunCgroup | None = None
    stage: Path | None = None
    if lim.isolation == "os":
        why = await asyncio.to_thread(sandbox_unavailable_reason)
        if why is not None:
            if not _weak["allowed"]:
                raise ToolExecutionError(
                    f"refusing to run untrusted code: the OS sandbox is unavailable: {why}. "
                    "Install bubblewrap, or accept the documented weaker isolation with "
                    "SandboxLimits(isolation='weak') or ponder.tools.allow_weak_sandbox() "
                    "(docs/tools.md)"
                )
            lim = lim.model_copy(update={"isolation": "weak"})
    if lim.isolation == "weak":
        if as_root():
            raise ToolExecutionError(
                "refusing to run untrusted code as root in the weak sandbox: it would run as "
                "host root. Install bubblewrap and allow unprivileged user namespaces (the OS "
                "sandbox then drops to an unprivileged uid), or run Ponder as a non-root user"
            )
        _warn_weak("chosen explicitly" if limits is not None and limits.isolation == "weak"
                   else "bubblewrap unavailable")  # fmt: skip
    workdir = await asyncio.to_thread(_prepare, code, files or {}, lim)
    seccomp_r: int | None = None
    proc: asyncio.subprocess.Process | None = None
    try:
        if lim.isolation == "os":
            program = seccomp_filter()
            if program is not None:
                seccomp_r, w = os.pipe()
                try:
                    os.write(w, program)  # a few hundred bytes: within the pipe's buffer
                finally:
                    os.close(w)
            binds = _bind_sources(lim, workdir)
            if as_root():  # never host root: bwrap runs as SANDBOX_UID (see _DROP)
                stage = Path(tempfile.mkdtemp(prefix="ponder-stage-"))
                source = {b: f"{stage}/{i}" for i, b in enumerate(binds)}
                argv = _bwrap_argv(lim, workdir, seccomp_r, source)
                await asyncio.to_thread(give_to_sandbox, workdir)
                # tmpfs pages are charged to the memory cgroup too
                memory = (lim.memory_mb + lim.disk_mb) * 1024 * 1024
                cgroup = await asyncio.to_thread(RunCgroup.make, memory, lim.max_processes)
                argv = drop_argv(stage, cgroup, binds, argv)
            else:
                argv = _bwrap_argv(lim, workdir, seccomp_r, {b: b for b in binds})
            cwd: Path = Path("/")
        else:
            argv = [sys.executable, "-I", "-B", "_ponder_bootstrap.py"]
            if lim.network_namespace and network_namespace_available():
                argv = ["unshare", "-Urn", "--", *argv]
            cwd = workdir
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
        }
        start = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                pass_fds=(seccomp_r,) if seccomp_r is not None else (),
                limit=1 << 20,  # the longest line readline() takes (run_checked's protocol)
            )
        except OSError as e:
            raise ToolExecutionError(f"cannot start the sandbox: {e}") from None
        finally:
            if seccomp_r is not None:
                os.close(seccomp_r)
                seccomp_r = None
        yield SandboxProcess(proc, lim, cgroup, start)
    finally:
        if proc is not None:
            if proc.returncode is None:
                _kill(proc)
                with contextlib.suppress(ProcessLookupError):
                    await proc.wait()
            if proc.stdin is not None:  # closed here, on its loop, not by the GC later
                proc.stdin.close()
        await asyncio.to_thread(shutil.rmtree, workdir, True)
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)
        if stage is not None:
            with contextlib.suppress(OSError):
                stage.rmdir()


async def run_python(
    code: str,
    *,
    stdin: str = "",
    files: dict[str, str] | None = None,
    limits: SandboxLimits | None = None,
) -> RunResult:
    """Run ``code`` as ``main.py`` in a fresh private directory, under ``limits``.

    ``files`` are written next to it first (e.g. tests to import). The directory is
    deleted afterwards. Failures of the code are reported in the result (exit code,
    stderr, ``killed_reason``); :class:`ToolExecutionError` means the sandbox itself
    could not run.
    """
    async with open_sandbox(code, files=files, limits=limits) as box:
        return await _collect(box, stdin.encode())


async def _collect(box: SandboxProcess, stdin: bytes) -> RunResult:
    """Feed ``stdin``, read the output within its bound, enforce the time limits."""
    proc, lim, cgroup, start = box.proc, box.limits, box.cgroup, box.start
    out, err = bytearray(), bytearray()
    budget = [lim.max_output_bytes]
    over = asyncio.Event()
    timed_out = False
    reason: str | None = None
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lim.timeout
    readers: asyncio.Future[Any] = asyncio.gather(
        _read_bounded(proc.stdout, out, budget, over),
        _read_bounded(proc.stderr, err, budget, over),
    )
    waiter: asyncio.Future[Any] = asyncio.ensure_future(over.wait())
    # stdin is written inside the timed wait: code that never reads it cannot stall it
    writer = asyncio.ensure_future(_write_stdin(proc.stdin, stdin))
    cpu_over = asyncio.Event()
    watchdog = (
        asyncio.ensure_future(_watch_cpu(cgroup, lim.cpu_seconds, cpu_over))
        if cgroup is not None and "cpu" in cgroup.dirs
        else None
    )
    cpu_waiter: asyncio.Future[Any] = asyncio.ensure_future(cpu_over.wait())
    try:
        done, _ = await asyncio.wait(
            {readers, waiter, cpu_waiter},
            timeout=lim.timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if waiter in done:
            reason = f"output limit of {lim.max_output_bytes} bytes"
        elif cpu_waiter in done:
            reason = f"CPU limit of {lim.cpu_seconds}s (all processes of the run)"
        elif not done:
            timed_out, reason = True, f"wall-clock timeout of {lim.timeout}s"
        else:  # the output is closed; the process may still run
            try:
                await asyncio.wait_for(proc.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                timed_out, reason = True, f"wall-clock timeout of {lim.timeout}s"
        if reason is not None:
            _kill(proc)
        # the process group is gone: the pipes reach EOF (unless something we could
        # not kill holds them open: then stop waiting after a few seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(readers), timeout=5)
        await proc.wait()
    except asyncio.CancelledError:
        _kill(proc)
        raise
    finally:
        waiter.cancel()
        cpu_waiter.cancel()
        writer.cancel()
        if watchdog is not None:
            watchdog.cancel()
        if not readers.done():
            readers.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readers
        if proc.returncode is None:
            _kill(proc)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
    code_ = proc.returncode
    if lim.isolation == "os" and code_ is not None and 128 < code_ <= 128 + 64:
        code_ = 128 - code_  # bubblewrap reports a child killed by signal N as 128 + N
    if reason is None and code_ is not None and code_ < 0:
        sig = -code_
        reason = {
            int(signal.SIGXCPU): f"CPU limit of {lim.cpu_seconds}s",
            int(signal.SIGKILL): "killed (memory or CPU limit)",
            int(signal.SIGXFSZ): f"file size limit of {lim.max_file_bytes} bytes",
        }.get(sig, f"killed by signal {sig}")
    stderr_text = err.decode(errors="replace")
    oom = cgroup is not None and await asyncio.to_thread(cgroup.out_of_memory)
    if oom and (reason is None or reason.startswith("killed")):
        reason = f"memory limit of {lim.memory_mb} MiB (all processes of the run)"
    if reason is None and "MemoryError" in stderr_text:
        reason = f"memory limit of {lim.memory_mb} MiB"
    return RunResult(
        exit_code=code_,
        stdout=out.decode(errors="replace"),
        stderr=stderr_text,
        duration=time.perf_counter() - start,
        timed_out=timed_out,
        output_truncated=budget[0] < 0,
        killed_reason=reason,
    )


async def _write_stdin(pipe: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        pipe.write(data)
        await pipe.drain()
        pipe.close()


async def _watch_cpu(cgroup: RunCgroup, limit: float, over: asyncio.Event) -> None:
    """Set ``over`` once every process of the run together has used ``limit`` CPU
    seconds (rlimits count each process alone)."""
    while True:
        used = cgroup.cpu_seconds()
        if used is not None and used > limit:
            over.set()
            return
        await asyncio.sleep(0.05)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
