"""Add llama.cpp's CPU kernels for AVX-512 CPUs to a portable llama-cpp-python wheel.

``./dev`` builds llama-cpp-python for x86-64-v3 (AVX2), which runs on every x86-64 server
CPU since 2013 but leaves AVX-512 unused where a CPU has it (Qwen2.5-0.5B decodes 16
sequences 1.4x faster with it on a Sapphire Rapids VM, docs/local.md "The build"). This
script compiles only llama.cpp's CPU kernel library (``libggml-cpu``, about 45 s each on
2 cores) once per variant below, from the same source archive as the wheel, and stores each
in the wheel at ``llama_cpp/lib/cpu/NAME/libggml-cpu.so.0``. At run time Ponder loads the
best one the CPU supports before llama.cpp itself (``ponder/backends/_llama_cpu.py``), and
the wheel's own AVX2 library stays the fallback. No variant has AMX: its kernels crash on
VMs that advertise AMX without granting its tile state.

Usage: python scripts/llama_cpu_variants.py SDIST WHEEL NAME...   (the wheel is rewritten
in place; NAME is a key of VARIANTS)
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# name -> ggml CMake options; keep in step with VARIANTS in ponder/backends/_llama_cpu.py
_BASE = "SSE42 AVX F16C FMA AVX2 BMI2 AVX512"
VARIANTS: dict[str, str] = {
    "icelake": f"{_BASE} AVX512_VBMI AVX512_VNNI",  # Ice Lake, Sapphire Rapids+, Zen 4+
    "skylakex": _BASE,  # Skylake-SP, Cascade Lake
}
_ALL = "SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AVX_VNNI"


def _tool(name: str, scratch: Path) -> str:
    """cmake or ninja from PATH, else from PyPI into a scratch folder (as pip's isolated
    build of the wheel gets them)."""
    found = shutil.which(name)
    if found:
        return found
    target = scratch / "tools"
    if not (target / "bin" / name).exists():
        pip = [sys.executable, "-m", "pip", "install", "-qq", "--prefix", str(target)]
        subprocess.run([*pip, "cmake", "ninja"], check=True)
    return str(next(target.glob(f"**/bin/{name}")))


def _flags(features: str) -> list[str]:
    on = set(features.split())
    flags = [f"-DGGML_{f}={'ON' if f in on else 'OFF'}" for f in _ALL.split()]
    flags += ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    return flags


def build(src: Path, name: str, features: str, scratch: Path) -> Path:
    out = scratch / f"build-{name}"
    cmake, ninja = _tool("cmake", scratch), _tool("ninja", scratch)
    subprocess.run(
        [
            cmake, "-S", str(src), "-B", str(out), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
            "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DCMAKE_SKIP_BUILD_RPATH=ON",
            "-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF",
            *_flags(features),
        ],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
    subprocess.run(
        [cmake, "--build", str(out), "--target", "ggml-cpu", "-j", jobs],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    libs = sorted(p for p in (out / "bin").glob("libggml-cpu.so.*") if not p.is_symlink())
    if not libs:
        raise SystemExit(f"no libggml-cpu was built in {out / 'bin'}")
    return libs[-1]


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def add_to_wheel(wheel: Path, files: dict[str, Path]) -> None:
    """Rewrite ``wheel`` with ``files`` (archive name -> file) added and RECORD updated."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as old, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as new:
        record = next(n for n in old.namelist() if n.endswith(".dist-info/RECORD"))
        lines = [
            ln for ln in old.read(record).decode().splitlines() if ln and not ln.startswith(record)
        ]
        for item in old.infolist():
            if item.filename != record and item.filename not in files:
                new.writestr(item, old.read(item))
        for arcname, path in files.items():
            data = path.read_bytes()
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            new.writestr(info, data)
            lines = [ln for ln in lines if not ln.startswith(arcname + ",")]
            lines.append(_record_line(arcname, data))
        lines.append(f"{record},,")
        new.writestr(record, "\n".join(lines) + "\n")
    tmp.replace(wheel)


def main(sdist: Path, wheel: Path, names: list[str]) -> None:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="ponder-ggml-") as d:
        scratch = Path(d)
        with tarfile.open(sdist) as tar:
            tar.extractall(scratch, filter="data")
        src = next(scratch.glob("*/vendor/llama.cpp"))
        files = {}
        for name in names:
            features = VARIANTS[name]
            print(f"building llama.cpp's CPU kernels for {name} ({features})", file=sys.stderr)
            lib = build(src, name, features, scratch)
            files[f"llama_cpp/lib/cpu/{name}/libggml-cpu.so.0"] = lib
        add_to_wheel(wheel, files)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
