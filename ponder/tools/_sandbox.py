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
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import ToolExecutionError

__all__ = [
    "RunResult",
    "SandboxLimits",
    "allow_weak_sandbox",
    "network_namespace_available",
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


# x86-64 system calls refused by the seccomp filter (see seccomp_filter)
_DENIED_SYSCALLS_X86_64 = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "vhangup": 153,
    "pivot_root": 155, "adjtimex": 159, "acct": 163, "settimeofday": 164, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438,
    "mount_setattr": 442,
}  # fmt: skip
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000


def seccomp_filter() -> bytes | None:
    """The seccomp BPF program bubblewrap installs (``--seccomp FD``): every syscall in
    the deny list, and the x32 ABI, fail with EPERM; a foreign architecture is killed.
    None on machines other than x86-64 (the namespaces still hold there)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    nrs = sorted(_DENIED_SYSCALLS_X86_64.values())
    errno_at = 6 + len(nrs)  # index of the 'return EPERM' instruction
    prog = [
        op(ld, 0, 0, 4),  # seccomp_data.arch
        op(jeq, 1, 0, _AUDIT_ARCH_X86_64),
        op(ret, 0, 0, 0x80000000),  # SECCOMP_RET_KILL_PROCESS
        op(ld, 0, 0, 0),  # seccomp_data.nr
        op(jge, errno_at - 4 - 1, 0, _X32_BIT),
    ]
    for i, nr in enumerate(nrs):
        prog.append(op(jeq, errno_at - (5 + i) - 1, 0, nr))
    prog.append(op(ret, 0, 0, 0x7FFF0000))  # SECCOMP_RET_ALLOW
    prog.append(op(ret, 0, 0, 0x00050000 | 1))  # SECCOMP_RET_ERRNO | EPERM
    return b"".join(prog)


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
    try:
        done = subprocess.run(
            [*argv, "--", "/usr/bin/true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap could not start: {e}"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
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


def _pids_cgroup(limit: int) -> Path | None:
    """A fresh pids cgroup limited to ``limit`` tasks, where this process may make one
    (root, with the pids controller writable), else None.

    Why: the kernel exempts processes whose real uid is root from ``RLIMIT_NPROC``, and a
    sandbox started by root runs as root outside its user namespace; a pids cgroup bounds
    a fork bomb there. Unprivileged users need no cgroup: ``RLIMIT_NPROC`` counts per
    user namespace and holds."""
    if os.geteuid() != 0:
        return None
    candidates = [Path("/sys/fs/cgroup/pids")]  # cgroup v1
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").exists():
        candidates.insert(0, v2)
    for base in candidates:
        if not (base / "cgroup.procs").exists():
            continue
        if base == v2:
            controllers = (v2 / "cgroup.subtree_control").read_text().split()
            if "pids" not in controllers:
                try:
                    (v2 / "cgroup.subtree_control").write_text("+pids")
                except OSError:
                    continue
        path = base / f"ponder-sandbox-{os.getpid()}-{time.monotonic_ns()}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(limit))
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            continue
        return path
    return None


def _remove_cgroup(path: Path) -> None:
    deadline = time.monotonic() + 5  # the PID namespace's last tasks may still be exiting
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                log.warning("could not remove the sandbox's cgroup %s", path)
                return
            time.sleep(0.05)


def _bwrap_argv(lim: SandboxLimits, workdir: Path, seccomp_fd: int | None) -> list[str]:
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
        "--ro-bind", prefix, prefix,
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(lim.disk_mb * 1024 * 1024),
        "--tmpfs", _BOX,
        "--ro-bind", str(workdir), _INPUTS,
        "--chdir", _BOX,
    ]  # fmt: skip
    if lim.site_packages:
        for d in _site_dirs():
            if d != prefix and not d.startswith(prefix + os.sep):
                argv += ["--ro-bind", d, d]
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
    lim = limits or SandboxLimits()
    cgroup: Path | None = None
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
        _warn_weak("chosen explicitly" if limits is not None and limits.isolation == "weak"
                   else "bubblewrap unavailable")  # fmt: skip
    workdir = await asyncio.to_thread(_prepare, code, files or {}, lim)
    seccomp_r: int | None = None
    try:
        if lim.isolation == "os":
            program = seccomp_filter()
            if program is not None:
                seccomp_r, w = os.pipe()
                try:
                    os.write(w, program)  # a few hundred bytes: within the pipe's buffer
                finally:
                    os.close(w)
            argv = _bwrap_argv(lim, workdir, seccomp_r)
            cgroup = await asyncio.to_thread(_pids_cgroup, lim.max_processes + 2)
            if cgroup is not None:  # enter the cgroup first, then become bwrap: no race
                argv = [
                    "/bin/sh",
                    "-c",
                    'echo $$ > "$0" && exec "$@"',
                    str(cgroup / "cgroup.procs"),
                    *argv,
                ]
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
            )
        except OSError as e:
            raise ToolExecutionError(f"cannot start the sandbox: {e}") from None
        finally:
            if seccomp_r is not None:
                os.close(seccomp_r)
                seccomp_r = None
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
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin.encode())
                await proc.stdin.drain()
                proc.stdin.close()
            done, _ = await asyncio.wait(
                {readers, waiter}, timeout=lim.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter in done:
                reason = f"output limit of {lim.max_output_bytes} bytes"
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
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
        if cgroup is not None:
            await asyncio.to_thread(_remove_cgroup, cgroup)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
