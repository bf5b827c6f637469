"""A crash of the native llama.cpp library becomes an error that says how to rebuild it.

``pip install llama-cpp-python`` compiles llama.cpp for the CPU it builds on
(``-march=native``). Such a build can die with ``Illegal instruction`` on another CPU, and
also on a VM whose CPU advertises AMX without the kernel granting the tile state to
llama.cpp's worker threads. A dead process says nothing useful, so before llama.cpp is
loaded in-process the local backend runs it once in a child process: load the model, then
decode a prompt and a two-sequence batch on every configured thread. A child killed by a
signal means the library cannot run here. For one of the AVX-512 kernel variants
(:mod:`._llama_cpu`), :func:`check_native_library` then falls back to the base build, with a
warning; for the base build it raises :class:`~ponder.errors.ConfigurationError` with the
rebuild command. The verdict is kept on disk per library build, kernel variant, CPU and
model file, so the probe runs once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import sys
import threading
from importlib import util
from pathlib import Path

from ponder.backends._llama_cpu import BASE, variant_file
from ponder.errors import ConfigurationError
from ponder.settings import default_cache_path

__all__ = ["REBUILD", "check_native_library", "library_files"]

log = logging.getLogger("ponder")

#: The command that rebuilds llama-cpp-python for any x86-64 CPU (docs/local.md)
REBUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF '
    '-DGGML_AMX_BF16=OFF -DGGML_AVX512=OFF" pip install --force-reinstall --no-cache-dir '
    "--no-deps --no-binary llama-cpp-python llama-cpp-python"
)

# The child: the same engine code the parent runs, on a tiny batch.
_CHILD = """
import asyncio, sys
from ponder.backends._llama_cpu import load_library
load_library(sys.argv[3])
from ponder.backends._llama_batch import BatchEngine, Sampling

async def main() -> None:
    engine = BatchEngine(sys.argv[1], n_ctx=128, n_threads=int(sys.argv[2]), max_sequences=2)
    sampling = Sampling(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05,
                        repeat_penalty=1.0, max_tokens=4)
    prompt = lambda m: m.tokenize(b"Count to ten: one, two, three", True, False)
    await engine.generate(prompt, sampling, [1, 2])
    engine.shutdown()

asyncio.run(main())
print("ok")
"""

_verdicts: dict[str, bool] = {}  # key -> the library ran
_lock = threading.Lock()  # one probe at a time: concurrent first requests wait for it


def library_files() -> list[Path]:
    """The native libraries of the installed llama-cpp-python (empty if not installed)."""
    spec = util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return []
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return sorted(p for p in lib.glob("*.so*") if p.is_file())


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _key(model: Path, threads: int, variant: str) -> str:
    h = hashlib.sha256()
    kernels = variant_file(variant) if variant != BASE else None
    for p in [*library_files(), *([kernels] if kernels else []), model]:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update(_cpu().encode())
    h.update(str(threads).encode())
    return h.hexdigest()[:24]


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def check_native_library(
    model: Path, threads: int, variant: str = BASE, *, timeout: float = 300.0
) -> str:
    """Run llama.cpp with the CPU kernels ``variant`` once in a child process, unless a
    verdict for this library build, variant, CPU and model is on record. Return the variant
    to load: ``variant``, or the base build if ``variant`` crashed (logged as a warning).
    Raise :class:`ConfigurationError` if the base build crashed. Blocks: call it from a
    worker thread."""
    with _lock:
        if variant != BASE and not _check(model, threads, variant, timeout):
            log.warning(
                "llama.cpp's %s CPU kernels crashed in a probe process on this CPU; running "
                "the base build instead (PONDER_LOCAL_CPU_VARIANT=base skips the probe of %s)",
                variant,
                variant,
            )
            variant = BASE
        if variant == BASE:
            _check(model, threads, BASE, timeout)  # raises if it crashed
        return variant


def _check(model: Path, threads: int, variant: str, timeout: float) -> bool:
    """Whether ``variant`` runs here; a crash of the base build raises."""
    key = _key(model, threads, variant)
    if key in _verdicts:
        return _verdicts[key]
    record = default_cache_path().parent / "llama-probe" / f"{key}.json"
    if record.is_file():
        try:
            ok = bool(json.loads(record.read_text()).get("ok", True))
        except (OSError, ValueError):
            ok = True  # an unreadable record: the in-process load will tell
        _verdicts[key] = ok
        return ok
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(model), str(threads), variant],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.warning("the llama.cpp probe took over %.0f s; loading the model anyway", timeout)
        return True
    if done.returncode < 0 and variant != BASE:
        _record(record, key, model, threads, variant, ok=False)
        return False
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        what = "Illegal instruction" if name == "SIGILL" else name
        raise ConfigurationError(
            f"the installed llama-cpp-python crashed ({what}) when it ran {model.name} in a "
            "probe process on this CPU: it was built for another CPU, or with kernels (such "
            "as AMX) that this machine does not grant. Rebuild it for any x86-64 CPU: "
            f"{REBUILD} (./dev does this by itself; see docs/local.md, 'The build'), or set "
            "PONDER_DEFAULT_MODEL to a server"
        )
    if done.returncode != 0:
        # an ordinary error (bad file, missing package): the in-process load reports it
        log.debug("llama.cpp probe exited %d: %s", done.returncode, done.stderr[-500:])
        return True
    _record(record, key, model, threads, variant, ok=True)
    return True


def _record(record: Path, key: str, model: Path, threads: int, variant: str, *, ok: bool) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps({"model": str(model), "threads": threads, "variant": variant, "ok": ok})
    )
    _verdicts[key] = ok
