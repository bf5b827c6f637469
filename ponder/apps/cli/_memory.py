"""``ponder memory``: inspect and manage cheatsheet memory (versioned)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from rich.table import Table

import ponder
from ponder._internal import loop as _loop
from ponder.apps.cli._app import (
    _console,
    _read_json_object,
    app,
)

if TYPE_CHECKING:
    pass


memory_app = typer.Typer(help="Inspect and manage cheatsheet memory (versioned).")
app.add_typer(memory_app, name="memory")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="A SQLite file or redis://host:port/db (default: next to the cache)."
    ),
]


def _with_store(store: str | None, fn: Any) -> Any:
    async def go() -> Any:
        from ponder.memory import open_store

        s = open_store(store)
        try:
            return await fn(s)
        finally:
            await s.aclose()

    return _loop.run(go())


@memory_app.command("show")
def memory_show(
    namespace: Annotated[str | None, typer.Argument(help="Namespace (none: list them).")] = None,
    store: StoreOption = None,
) -> None:
    """Print a namespace's latest cheatsheet, or list the namespaces."""

    async def go(s: Any) -> None:
        if namespace is None:
            for ns in await s.namespaces():
                print(ns)
            return
        c = await s.latest(namespace)
        if c is None:
            raise ponder.ConfigurationError(f"no cheatsheet named {namespace!r} in this store")
        _console().rule(f"{namespace} v{c.version}")
        print(c.content)

    _with_store(store, go)


@memory_app.command("history")
def memory_history(
    namespace: Annotated[str, typer.Argument(help="Namespace.")],
    store: StoreOption = None,
) -> None:
    """Every version of a namespace: number, time, size, note."""

    async def go(s: Any) -> None:
        table = Table(title=f"{namespace}: history")
        for col in ("version", "created", "chars", "note"):
            table.add_column(col)
        for c in await s.history(namespace):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created))
            table.add_row(str(c.version), when, str(len(c.content)), c.note)
        _console().print(table)

    _with_store(store, go)


@memory_app.command("rollback")
def memory_rollback(
    namespace: Annotated[str, typer.Argument(help="Namespace.")],
    version: Annotated[int, typer.Argument(help="The version to bring back.")],
    store: StoreOption = None,
) -> None:
    """Make a new version with the content of an old one (history is kept)."""
    from ponder.memory import rollback

    c = _with_store(store, lambda s: rollback(s, namespace, version))
    _console().print(f"{namespace} is now v{c.version} (= v{version})")


@memory_app.command("export")
def memory_export(
    namespace: Annotated[str, typer.Argument(help="Namespace.")],
    store: StoreOption = None,
) -> None:
    """Print a namespace's whole history as JSON (exit 1 if the namespace is unknown)."""
    from ponder.memory import export_namespace

    data = _with_store(store, lambda s: export_namespace(s, namespace))
    if not data.get("versions"):
        raise ponder.ConfigurationError(
            f"no namespace {namespace!r} in the store (ponder memory show lists them)"
        )
    print(json.dumps(data, indent=2))


@memory_app.command("import")
def memory_import(
    file: Annotated[str, typer.Argument(help="A JSON export.")],
    namespace: Annotated[str | None, typer.Option(help="Import under this name.")] = None,
    store: StoreOption = None,
) -> None:
    """Replay an export into the store (as new versions)."""
    from ponder.memory import import_namespace

    data = _read_json_object(file, "an export")
    c = _with_store(store, lambda s: import_namespace(s, data, namespace=namespace))
    _console().print(f"imported: {c.namespace} is at v{c.version}" if c else "nothing to import")
