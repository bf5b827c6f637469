"""What the sandbox does when Ponder runs as root, as in most containers: it never runs
code as host root, but drops to an unprivileged uid (:data:`SANDBOX_UID`) on a private
stage of the paths it needs, and bounds each run with its own cgroups (memory with swap
off, CPU time, every process of the run killed and removed at its end)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path

__all__ = [
    "SANDBOX_GID",
    "SANDBOX_UID",
    "RunCgroup",
    "as_root",
    "drop_argv",
    "give_to_sandbox",
]

log = logging.getLogger("ponder")

#: The host uid/gid the sandbox runs as when Ponder runs as root (nobody/nogroup)
SANDBOX_UID = 65534
SANDBOX_GID = 65534


def as_root() -> bool:
    """Whether this process runs as root (the sandbox then drops to an unprivileged uid
    and bounds each run with its own cgroups)."""
    return os.geteuid() == 0


class RunCgroup:
    """The cgroup(s) of one run, where this process may make them (root, with the
    controllers writable): pids, memory (swap off) and CPU time counted for the whole
    run, every process of it together. cgroup v2 (one directory) or v1 (one directory
    per controller, under this process's own cgroup in each hierarchy).

    Why: rlimits count per process, so children, memfds and shared memory escape them;
    and the kernel exempts real uid 0 from ``RLIMIT_NPROC``."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs  # controller -> directory (v2: the same directory for all)

    @classmethod
    def make(cls, memory: int, max_processes: int) -> RunCgroup | None:
        """Cgroups bounding a run to ``memory`` bytes (swap off) and ``max_processes``
        (None when this process cannot make them: not root, or no writable cgroupfs)."""
        if not as_root():
            return None
        name = f"ponder-sandbox-{os.getpid()}-{time.monotonic_ns()}"
        root = Path("/sys/fs/cgroup")
        made: list[Path] = []
        try:
            if (root / "cgroup.controllers").exists():  # v2
                wanted = {"pids", "memory", "cpu"}
                have = set((root / "cgroup.subtree_control").read_text().split())
                for c in sorted(wanted - have):
                    with contextlib.suppress(OSError):
                        (root / "cgroup.subtree_control").write_text(f"+{c}")
                path = root / name
                path.mkdir()
                made.append(path)
                (path / "pids.max").write_text(str(max_processes + 2))
                (path / "memory.max").write_text(str(memory))
                with contextlib.suppress(OSError):
                    (path / "memory.swap.max").write_text("0")
                return cls({"pids": path, "memory": path, "cpu": path})
            own = _v1_own_cgroups()
            dirs: dict[str, Path] = {}
            for ctrl, hier in (("pids", "pids"), ("memory", "memory"), ("cpu", "cpuacct")):
                base = root / hier
                if not (base / "cgroup.procs").exists():
                    continue
                path = base / own.get(hier, "").lstrip("/") / name
                path.mkdir()
                made.append(path)
                dirs[ctrl] = path
            if "pids" in dirs:
                (dirs["pids"] / "pids.max").write_text(str(max_processes + 2))
            if "memory" in dirs:
                (dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory))
                with contextlib.suppress(OSError):  # only with swap accounting
                    (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory))
            return cls(dirs) if dirs else None
        except OSError as e:
            log.debug("no cgroup for the sandbox: %s", e)
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()
            return None

    @property
    def procs(self) -> list[str]:
        """The cgroup.procs files the sandbox's first process joins."""
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process of the run so far."""
        d = self.dirs.get("cpu")
        if d is None:
            return None
        try:
            if (d / "cpu.stat").exists() and not (d / "cpuacct.usage").exists():
                for line in (d / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            return int((d / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def out_of_memory(self) -> bool:
        """Whether the run hit its memory limit."""
        d = self.dirs.get("memory")
        if d is None:
            return False
        try:
            if (d / "memory.events").exists():
                for line in (d / "memory.events").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key in ("oom_kill", "max") and int(value) > 0:
                        return True
                return False
            return int((d / "memory.failcnt").read_text()) > 0
        except (OSError, ValueError):
            return False

    def kill_all(self) -> None:
        """SIGKILL every process left in the run's cgroup. bubblewrap's die-with-parent
        can miss a sandbox killed while it starts; the cgroup misses nothing."""
        for path in {*self.dirs.values()}:
            if (path / "cgroup.kill").exists():  # cgroup v2
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
                continue
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        self.kill_all()
        for path in {*self.dirs.values()}:
            _remove_cgroup(path)


def _v1_own_cgroups() -> dict[str, str]:
    """This process's cgroup path in each v1 hierarchy (``memory`` -> ``/a/b``)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                for ctrl in parts[1].split(","):
                    out[ctrl] = parts[2]
    return out


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


# Run as root: in a private mount namespace, join the run's cgroups, bind the paths the
# sandbox needs onto a world-readable stage (the interpreter may live under /root, which
# the sandbox's unprivileged uid cannot traverse), then drop to that uid with no groups and
# no capabilities and become bubblewrap. Arguments: STAGE UID GID NPROCS PROCS... NBINDS
# BINDS... -- BWRAP ARGV
_DROP = r"""
set -e
stage=$1; uid=$2; gid=$3; n=$4; shift 4
while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n - 1)); done
n=$1; shift
mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev ponder-stage "$stage"
i=0
while [ "$i" -lt "$n" ]; do
  mkdir "$stage/$i"
  mount --bind "$1" "$stage/$i"
  mount -o remount,bind,ro,nosuid,nodev "$stage/$i"
  shift; i=$((i + 1))
done
shift
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all \
  --bounding-set=-all --no-new-privs -- "$@"
"""


def drop_argv(
    stage: Path, cgroup: RunCgroup | None, binds: list[str], bwrap: list[str]
) -> list[str]:
    """As root: the command that runs ``bwrap`` as :data:`SANDBOX_UID` (see ``_DROP``)."""
    procs = cgroup.procs if cgroup is not None else []
    unshare = shutil.which("unshare") or "unshare"
    return [
        unshare, "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", _DROP, "sh", str(stage), str(SANDBOX_UID), str(SANDBOX_GID),
        str(len(procs)), *procs, str(len(binds)), *binds, "--", *bwrap,
    ]  # fmt: skip


def give_to_sandbox(path: Path) -> None:
    """As root: the run's inputs belong to the sandbox's uid, which must read them."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), SANDBOX_UID, SANDBOX_GID, follow_symlinks=False)
    os.chown(path, SANDBOX_UID, SANDBOX_GID)
