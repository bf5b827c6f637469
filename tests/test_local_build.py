"""The native llama.cpp build runs on any x86-64 machine, and a build that cannot run here is
a clear error, never a dead process (docs/local.md, "The build")."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from ponder import ConfigurationError, Model, Settings
from ponder.backends import _llama_cpu as cpu_variant
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
    llama.cpp's threads, and AVX-512 is missing on many x86-64 CPUs: the wheel's own
    library has neither, so it runs wherever x86-64-v3 (AVX2) does."""
    libs = probe.library_files()
    cpu = [p for p in libs if p.name.startswith("libggml-cpu")]
    assert cpu, f"no libggml-cpu in {libs}"
    for lib in cpu:
        code = _disassembly(lib)
        assert not AMX.search(code), f"{lib.name} contains AMX instructions"
        assert "%zmm" not in code, f"{lib.name} was built for AVX-512 (-march=native?)"
    info = _system_info(cpu_variant.BASE)
    assert "AMX_INT8 = 1" not in info
    assert "AVX2 = 1" in info  # the stated baseline, not a build for the oldest CPUs
    assert "AVX512 = 1" not in info


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the AVX-512 kernels are x86-64's")
def test_the_avx512_kernels_ship_in_the_wheel_without_amx() -> None:
    """./dev adds llama.cpp's CPU kernels for AVX-512 CPUs to the wheel; none has AMX."""
    assert cpu_variant.available() == [v.name for v in cpu_variant.VARIANTS], (
        "the wheel lacks its AVX-512 kernels: rebuild it with ./dev (scripts/llama_cpu_variants.py)"
    )
    for v in cpu_variant.VARIANTS:
        lib = cpu_variant.variant_file(v.name)
        assert lib is not None
        code = _disassembly(lib)
        assert not AMX.search(code), f"{v.name} contains AMX instructions"
        assert "%zmm" in code, f"{v.name} was not built for AVX-512"


def _system_info(variant: str) -> str:
    """llama.cpp's own report of its CPU kernels, in a child that loaded ``variant``."""
    code = (
        "import sys\n"
        "from ponder.backends._llama_cpu import load_library, _mapped\n"
        "load_library(sys.argv[1])\n"
        "import llama_cpp\n"
        "print(_mapped()); print(llama_cpp.llama_print_system_info().decode())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, variant], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    mapped, _, info = done.stdout.partition("\n")
    assert mapped == variant  # the kernels in the process's memory are the ones asked for
    return info


_X86_64_V4 = {"avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq"}
CASCADE_LAKE = frozenset({*_X86_64_V4, "avx512bw"})
SAPPHIRE_RAPIDS_VM = CASCADE_LAKE | {
    "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"
}  # fmt: skip
HASWELL = frozenset(["avx", "avx2", "fma", "f16c", "bmi2"])


@pytest.mark.parametrize(
    ("flags", "want"),
    [(SAPPHIRE_RAPIDS_VM, "icelake"), (CASCADE_LAKE, "skylakex"), (HASWELL, "base"),
     (frozenset(), "base")],
)  # fmt: skip
def test_the_best_kernels_the_cpu_supports_are_chosen(flags: frozenset[str], want: str) -> None:
    if platform.machine() != "x86_64":
        want = "base"
    assert cpu_variant.choose("auto", flags) == want
    assert cpu_variant.choose("base", flags) == "base"


def test_an_unknown_or_missing_variant_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown llama.cpp CPU variant 'zen9'.*auto"):
        cpu_variant.choose("zen9")
    with pytest.raises(ConfigurationError, match="local_cpu_variant"):
        Settings.load(local_cpu_variant="zen9")
    assert set(cpu_variant.names()) | {"auto", "base"} == set(
        get_args(Settings.model_fields["local_cpu_variant"].annotation)
    )  # the setting's choices are the variants


@pytest.mark.parametrize("setting", ["auto", "base"])
def test_a_model_runs_the_kernels_its_setting_names(setting: str) -> None:
    """End to end in a fresh process: the setting picks the kernels llama.cpp runs."""
    code = (
        "from ponder import Model\n"
        "from ponder.backends._llama_cpu import _mapped\n"
        "m = Model('local:smollm2', cache=False)\n"
        "print(repr(m.generate_sync('Say hi', max_tokens=3, seed=1).text)); print(_mapped())\n"
    )
    env = {**os.environ, "PONDER_LOCAL_CPU_VARIANT": setting, "PONDER_LOCAL_N_CTX": "256"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == cpu_variant.choose(setting)


def test_llama_cpp_imported_first_keeps_its_library_and_says_so() -> None:
    code = (
        "import logging, llama_cpp\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from ponder.backends._llama_cpu import load_library\n"
        "print(load_library('icelake'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "base"
    if cpu_variant.variant_file("icelake") is not None:
        assert "imported before Ponder chose its CPU kernels" in done.stderr


def test_kernels_that_crash_here_fall_back_to_the_base_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A VM that advertises an instruction set it does not enable: the AVX-512 kernels die
    in the probe, and the model runs on the base build instead of failing."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(probe, "_verdicts", {})
    dies = "import os, signal, sys\nif sys.argv[3] != 'base': os.kill(os.getpid(), signal.SIGILL)\n"
    monkeypatch.setattr(probe, "_CHILD", dies + probe._CHILD)
    with caplog.at_level(logging.WARNING, logger="ponder"):
        assert probe.check_native_library(default_model_path(), 2, "icelake") == "base"
    assert "icelake CPU kernels crashed" in caplog.text
    verdicts = sorted(
        json.loads(p.read_text())["ok"] for p in (tmp_path / "ponder" / "llama-probe").glob("*")
    )
    assert verdicts == [False, True]  # both kept: the next process asks no child
    monkeypatch.setattr(probe, "_verdicts", {})
    monkeypatch.setattr(subprocess, "run", _no_child)
    assert probe.check_native_library(default_model_path(), 2, "icelake") == "base"


def _no_child(*args: object, **kwargs: object) -> None:
    raise AssertionError("the probe ran again")


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
