"""The ``ponder`` command line: the typer app, shared options and the entry points
(``main(argv) -> int`` is the testable one). Each command group lives in its own module
of this package and registers itself on :data:`app` when the package is imported."""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main
from rich.console import Console

import ponder
from ponder.errors import PonderError

if TYPE_CHECKING:
    pass


app = typer.Typer(
    name="ponder",
    help="Ponder: inference-time reasoning with stacked LLM pipelines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console() -> Console:
    return Console(stderr=False, highlight=False)


def _read_json_object(path: str, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, or a ConfigurationError saying what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ponder.ConfigurationError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ponder.ConfigurationError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ponder.ConfigurationError(f"{path}: {what} is a JSON object")
    return data


ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="NAME=REF: run the workflow's model NAME (a glob) on REF instead (repeatable).",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        _console().print(f"ponder {ponder.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Ponder: inference-time reasoning with stacked LLM pipelines."""


@app.command()
def version() -> None:
    """Print Ponder's version."""
    _console().print(f"ponder {ponder.__version__}")


EXIT_ERROR = 1
"""Exit code: an error stopped the command (bad input, configuration, a backend fault)."""
EXIT_USAGE = 2
"""Exit code: the command line itself is wrong (unknown option, missing argument)."""
EXIT_RUN_FAILED = 3
"""Exit code: the command ran, but a run failed (``run``: a node failed; ``eval``: an item
failed). What finished is kept (checkpoints, the results file, the response cache)."""


def _unwrap(text: str | None) -> str | None:
    """Docstring paragraphs as single lines (the help would otherwise break where the
    source wraps); blank lines still separate paragraphs."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _metavar(param: Any) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    desc = getattr(param, "type_descriptor", None)
    if desc is not None and getattr(desc, "is_choice", False):
        return "|".join(str(c) for c in desc.choices or ())
    annotation = getattr(desc, "annotation", None)
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    return str(param.name or "value").upper()


def _polish(cmd: Any) -> None:
    """Real metavars (NAME, N, X; nothing after a flag) and unwrapped help, all commands
    (the command objects are duck-typed: Typer vendors its own click)."""
    cmd.help = _unwrap(cmd.help)
    if getattr(cmd, "short_help", None) is not None:
        cmd.short_help = _unwrap(cmd.short_help)
    for param in cmd.params:
        if getattr(param, "param_type_name", "") == "argument":
            param.display_type_rich = lambda ctx: None  # the name says it: WORKFLOW, FILE
            if param.metavar is None:
                param.metavar = str(param.name or "value").upper()
        elif param.metavar is None:
            param.metavar = _metavar(param)
        if getattr(param, "help", None):
            param.help = _unwrap(param.help)
    make_help = cmd.get_help_option

    def help_option(ctx: Any) -> Any:
        opt = make_help(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    cmd.get_help_option = help_option
    for sub in getattr(cmd, "commands", {}).values():
        _polish(sub)


@functools.cache
def _command() -> Any:
    cmd = typer.main.get_command(app)
    _polish(cmd)
    return cmd


def _unknown_command(args: list[str]) -> str | None:
    """The usage error for a misspelt command, with 'did you mean', or None."""
    cmd = _command()
    group: Any = cmd
    path = ["ponder"]
    for word in args:
        if word.startswith("-"):
            return None
        commands = getattr(group, "commands", None)
        if not commands:
            return None
        if word not in commands:
            close = difflib.get_close_matches(word, list(commands), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            known = ", ".join(sorted(commands))
            return (
                f"Usage: {' '.join(path)} COMMAND ...\n\nerror: no command '{word}'.{hint} "
                f"Commands: {known}. Try '{' '.join(path)} --help'."
            )
        group = commands[word]
        path.append(word)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (errors print, never raise):
    0 success, 1 error, 2 usage, 3 a run failed (docs/workflows.md)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        unknown = _unknown_command(args)
        if unknown is not None:
            print(unknown, file=sys.stderr)
            return 2
        _command()(args=args, prog_name="ponder")
    except PonderError as e:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {e}", markup=True, highlight=False
        )
        return 1
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
