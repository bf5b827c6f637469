"""The native llama.cpp build runs on any x86-64 machine, and a build that cannot run here is
a clear error, never a dead process (docs/local.md, "The build")."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ponder import ConfigurationError, Model, Settings
from ponder.backends import _llama_probe as probe
from ponder.backends._local import default_model_path

pytest.importorskip("llama_cpp", reason="the local extra is not installed")

# every AMX instruction mnemonic (tile configuration, loads/stores, dot products)
AMX = re.compile(r"\b(ldtilecfg|sttilecfg|tilerelease|tilezero|tileloadd|tileloaddt1|tilestored|"
                 r"tdpb[su][su]d|tdpbf16ps|tdpfp16ps|tcmmimfp16ps|tcmmrlfp16ps)\b")  # fmt: skip


def _disassembly(lib: Path) -> str:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.fail("objdump is missing: apt-get install binutils")
    done = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(lib)],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return done.stdout


def test_the_built_library_selects_no_amx_kernel_and_needs_no_avx512() -> None:
    """AMX kernels crash on VMs that advertise AMX without granting its tile state to
    llama.cpp's threads, and AVX-512 is missing on many x86-64 CPUs: the build has
    neither, so it runs wherever x86-64-v3 (AVX2) does."""
    import llama_cpp

    libs = probe.library_files()
    cpu = [p for p in libs if p.name.startswith("libggml-cpu")]
    assert cpu, f"no libggml-cpu in {libs}"
    for lib in cpu:
        code = _disassembly(lib)
        assert not AMX.search(code), f"{lib.name} contains AMX instructions"
        assert "%zmm" not in code, f"{lib.name} was built for AVX-512 (-march=native?)"
    info = llama_cpp.llama_print_system_info().decode()
    assert "AMX_INT8 = 1" not in info
    assert "AVX2 = 1" in info  # the stated baseline, not a build for the oldest CPUs


def test_a_library_that_crashes_here_is_a_clear_error_not_a_dead_process(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    # the probe child dies as a native build does on an AMX VM
    monkeypatch.setattr(probe, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    monkeypatch.setattr(probe, "_verdicts", {})
    with pytest.raises(ConfigurationError, match=r"Illegal instruction.*GGML_NATIVE=OFF"):
        probe.check_native_library(default_model_path(), 2)
    # through a model, on an engine not yet loaded in this process: the same error
    fresh = settings.model_copy(update={"local_n_ctx": 320})
    with pytest.raises(ConfigurationError, match=r"Illegal instruction.*docs/local\.md"):
        Model("local:smollm2", settings=fresh, cache=False).generate_sync("hi", max_tokens=2)


def test_a_child_that_fails_without_a_signal_defers_to_the_in_process_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probe, "_CHILD", "raise SystemExit(3)")
    monkeypatch.setattr(probe, "_verdicts", {})
    probe.check_native_library(default_model_path(), 2)  # no verdict: nothing raised


def test_the_probe_runs_once_per_library_build_cpu_and_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(probe, "_verdicts", {})
    probe.check_native_library(default_model_path(), 2)  # the real library, in a child
    records = list((tmp_path / "ponder" / "llama-probe").glob("*.json"))
    assert len(records) == 1

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("the probe ran twice")

    monkeypatch.setattr(subprocess, "run", no_child)
    monkeypatch.setattr(probe, "_verdicts", {})
    probe.check_native_library(default_model_path(), 2)  # the record on disk is enough
