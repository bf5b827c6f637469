"""Which build of llama.cpp's CPU kernels this process runs.

``./dev`` builds llama-cpp-python for x86-64-v3 (AVX2, every x86-64 server CPU since 2013)
and adds to the wheel llama.cpp's CPU kernel library built for AVX-512 CPUs, at
``llama_cpp/lib/cpu/NAME/libggml-cpu.so.0`` (``scripts/llama_cpu_variants.py``). None has
AMX. Before ``llama_cpp`` is first imported, :func:`load_library` loads the chosen variant;
llama.cpp's ``libggml.so`` then binds to it by its soname instead of the wheel's own AVX2
library. On this project's 2-core Sapphire Rapids VM, the AVX-512 kernels decode 16
sequences of Qwen2.5-0.5B 1.3-1.4x faster (docs/local.md, "The build").

The choice is one per process (the first load wins) and comes from the
``local_cpu_variant`` setting (``PONDER_LOCAL_CPU_VARIANT``): ``auto`` (the best variant the
CPU's flags allow), ``base`` (the wheel's own library), or a variant's name. The child-process
probe (:mod:`._llama_probe`) runs the choice first, and falls back to ``base`` if it
crashes.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from dataclasses import dataclass
from importlib import util
from pathlib import Path

from ponder.errors import ConfigurationError

__all__ = [
    "BASE",
    "VARIANTS",
    "CpuVariant",
    "available",
    "choose",
    "cpu_flags",
    "in_use",
    "load_library",
    "names",
    "variant_file",
]

log = logging.getLogger("ponder")

BASE = "base"  # the wheel's own libggml-cpu (x86-64-v3 when ./dev built it)

_AVX512 = frozenset(
    {"avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
)


@dataclass(frozen=True)
class CpuVariant:
    """A build of llama.cpp's CPU kernels, and the CPU flags (as Linux names them in
    ``/proc/cpuinfo``) it needs."""

    name: str
    needs: frozenset[str]
    what: str


#: best first; keep in step with VARIANTS in scripts/llama_cpu_variants.py
VARIANTS: tuple[CpuVariant, ...] = (
    CpuVariant("icelake", _AVX512 | {"avx512vbmi", "avx512_vnni"}, "AVX-512 with VBMI and VNNI"),
    CpuVariant("skylakex", _AVX512, "AVX-512"),
)

_lock = threading.Lock()
_loaded: str | None = None


def _lib_dir() -> Path | None:
    spec = util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def variant_file(name: str) -> Path | None:
    """The kernel library of variant ``name`` in the installed wheel, if it is there."""
    lib = _lib_dir()
    path = lib / "cpu" / name / "libggml-cpu.so.0" if lib is not None else None
    return path if path is not None and path.is_file() else None


def names() -> list[str]:
    """Every variant's name, best first."""
    return [v.name for v in VARIANTS]


def available() -> list[str]:
    """The variants the installed llama-cpp-python carries, best first."""
    return [v.name for v in VARIANTS if variant_file(v.name) is not None]


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (a feature the kernel has not
    enabled, such as AVX-512 without its register state, is left out). Empty off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def choose(setting: str = "auto", flags: frozenset[str] | None = None) -> str:
    """The variant to load for ``setting``: ``auto`` picks the best one installed that
    ``flags`` (this CPU's, by default) allow, else ``base``."""
    if setting == BASE:
        return BASE
    names = {v.name: v for v in VARIANTS}
    if setting != "auto":
        if setting not in names:
            raise ConfigurationError(
                f"unknown llama.cpp CPU variant {setting!r} (PONDER_LOCAL_CPU_VARIANT): "
                f"use auto, {BASE}, or one of {', '.join(names)}"
            )
        if variant_file(setting) is None:
            raise ConfigurationError(
                f"the installed llama-cpp-python has no {setting!r} CPU kernels: rebuild it "
                "with ./dev (docs/local.md, 'The build'), or set PONDER_LOCAL_CPU_VARIANT=auto"
            )
        return setting
    have = cpu_flags() if flags is None else flags
    installed = set(available())
    for v in VARIANTS:
        if v.name in installed and v.needs <= have:
            return v.name
    return BASE


def _mapped() -> str | None:
    """The variant whose kernels are mapped into this process (``base`` for the wheel's
    own), or None if llama.cpp is not loaded."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        if "libggml-cpu.so" in line:
            parts = Path(line.split()[-1]).parts
            return parts[-2] if len(parts) > 2 and parts[-3] == "cpu" else BASE
    return None


def in_use() -> str | None:
    """The variant this process runs, once llama.cpp is loaded."""
    return _loaded or _mapped()


def load_library(variant: str | None = None) -> str:
    """Load the kernels of ``variant`` (default: :func:`choose` for ``auto``) ahead of
    llama.cpp, once per process; later calls return the variant loaded. If ``llama_cpp``
    was imported before Ponder chose, its library stays and that is returned."""
    global _loaded
    with _lock:
        if _loaded is not None:
            if variant is not None and variant != _loaded:
                log.debug("llama.cpp CPU kernels %s are loaded; %s not used", _loaded, variant)
            return _loaded
        if "llama_cpp" in sys.modules:
            _loaded = _mapped() or BASE
            if variant not in (None, _loaded):
                log.info(
                    "llama_cpp was imported before Ponder chose its CPU kernels: running %s, "
                    "not %s (import ponder's local backend first, docs/local.md)",
                    _loaded,
                    variant,
                )
            return _loaded
        name = choose() if variant is None else variant
        path = variant_file(name) if name != BASE else None
        lib = _lib_dir()
        if path is not None and lib is not None:
            # the wheel's libggml-base first, so that the variant binds to it, then the
            # variant, whose soname libggml.so's dependency will match
            ctypes.CDLL(str(lib / "libggml-base.so.0"), mode=ctypes.RTLD_GLOBAL)
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        else:
            name = BASE
        _loaded = name
        log.debug("llama.cpp CPU kernels: %s", name)
        return name
