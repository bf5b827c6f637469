"""Run untrusted generated Python in a subprocess it cannot escape from.

Layers, each enough to stop the common failure, together defence in depth:

* **Time**: a wall-clock timeout kills the whole process group; ``RLIMIT_CPU`` stops a
  busy loop even if the parent is gone.
* **Memory, files, output**: ``RLIMIT_AS`` (address space), ``RLIMIT_FSIZE`` (largest
  file written), ``RLIMIT_NOFILE``, no core dumps; stdout/stderr are read up to a bound
  and the process is killed when it prints more.
* **Network**: a fresh network namespace with no interfaces (``unshare -Urn``) where the
  kernel allows it; in any case an audit hook refuses socket connects, binds and lookups.
* **Filesystem**: a private temporary directory as cwd, HOME and TMPDIR, deleted
  afterwards; the audit hook refuses opening, listing or changing paths outside it (the
  Python installation stays readable so imports work) and refuses ``subprocess``,
  ``os.system``, ``exec``, ``fork`` and ``ctypes``.
* **Environment**: ``python -I`` (isolated mode: no user site, no PYTHON* variables) with
  a minimal environment, so no API key of the parent leaks in.

The audit hook is installed by a bootstrap before the user's code runs and cannot be
removed from Python. It is not a security boundary against native code, which is why
``ctypes`` and process creation are refused and why the namespace is used when available.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ponder.errors import ToolExecutionError

__all__ = ["RunResult", "SandboxLimits", "network_namespace_available", "run_python"]


class SandboxLimits(BaseModel):
    """Limits of one run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout: float = Field(10.0, gt=0, description="Wall-clock seconds before the kill.")
    cpu_seconds: int = Field(10, ge=1)
    memory_mb: int = Field(512, ge=32, description="Address space, in MiB.")
    max_output_bytes: int = Field(1_000_000, ge=1024, description="stdout + stderr.")
    max_file_bytes: int = Field(10_000_000, ge=0, description="Largest file it may write.")
    max_open_files: int = Field(64, ge=16)
    network_namespace: bool = Field(True, description="Use unshare -Urn when available.")


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

def _limits(cpu, mem, fsize, nofile):
    # CPU: SIGXCPU at the soft limit, SIGKILL a second later
    for res, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, mem, mem),
                            (resource.RLIMIT_FSIZE, fsize, fsize),
                            (resource.RLIMIT_NOFILE, nofile, nofile),
                            (resource.RLIMIT_CORE, 0, 0)):
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            pass

_limits({cpu}, {mem}, {fsize}, {nofile})
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

def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return p == _ROOT or p.startswith(_ROOT + os.sep)

def _readable(path, mode):
    if _inside(path):
        return True
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
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
            if not _readable(path, mode):
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


def _read_only_roots() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots |= {p for p in sys.path if p and os.path.isdir(p)}
    roots |= {"/usr/lib", "/usr/local/lib", "/usr/share/zoneinfo", "/dev/null", "/dev/urandom"}
    return sorted(os.path.realpath(r) for r in roots)


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
        bootstrap = _BOOTSTRAP.format(
            cpu=lim.cpu_seconds,
            mem=lim.memory_mb * 1024 * 1024,
            fsize=lim.max_file_bytes,
            nofile=lim.max_open_files,
            read_ok=_read_only_roots(),
        )
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
    workdir = await asyncio.to_thread(_prepare, code, files or {}, lim)
    try:
        argv = [sys.executable, "-I", "-B", "_ponder_bootstrap.py"]
        if lim.network_namespace and network_namespace_available():
            argv = ["unshare", "-Urn", "--", *argv]
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
                cwd=workdir,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise ToolExecutionError(f"cannot start the sandbox: {e}") from None
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


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
