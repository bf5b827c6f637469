"""The public surface of every package, pinned: each name a package exports, with what
it is (class, function, constant) and, for callables, its signature.

A change to the surface (a name added, removed or changed) fails here with the
difference; when it is meant, regenerate the record and commit it with the change:

    python tests/test_api_surface.py --update
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from pathlib import Path

RECORD = Path(__file__).parent / "api_surface.txt"
PACKAGES = [
    "ponder",
    "ponder.agents",
    "ponder.apps",
    "ponder.backends",
    "ponder.engine",
    "ponder.errors",
    "ponder.eval",
    "ponder.graphs",
    "ponder.memory",
    "ponder.testing",
    "ponder.tools",
    "ponder.tracing",
    "ponder.types",
    "ponder.workflows",
]


def describe(obj: object) -> str:
    if inspect.isclass(obj):
        try:
            return f"class{inspect.signature(obj)}"
        except (TypeError, ValueError):
            return "class"
    if callable(obj):
        try:
            return f"function{inspect.signature(obj)}"
        except (TypeError, ValueError):
            return "callable"
    return f"value: {type(obj).__name__}"


def surface() -> list[str]:
    lines = []
    for name in PACKAGES:
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        if exported is None:
            lines.append(f"{name}: no __all__")
            continue
        for attr in sorted(exported):
            lines.append(f"{name}.{attr}: {describe(getattr(module, attr))}")
    return lines


def test_the_public_surface_is_as_recorded() -> None:
    now = surface()
    recorded = RECORD.read_text().splitlines()
    if now != recorded:
        diff = "\n".join(difflib.unified_diff(recorded, now, "recorded", "now", lineterm=""))
        raise AssertionError(
            "the public API changed; if that is meant, run "
            f"'python tests/test_api_surface.py --update' and commit {RECORD.name}:\n{diff}"
        )


def test_no_private_name_is_exported() -> None:
    for line in surface():
        name = line.split(":", 1)[0].rsplit(".", 1)[-1]
        assert not name.startswith("_") or name == "__version__", line


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        RECORD.write_text("\n".join(surface()) + "\n")
        print(f"wrote {RECORD}")
    else:
        print("\n".join(surface()))
