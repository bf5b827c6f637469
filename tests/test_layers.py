"""Imports flow one way (docs/architecture.md): a module never imports from a layer above
its own. Checked on the source, every import (function-level ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "ponder"

RANK = {
    "errors": 0,
    "types": 0,
    "settings": 0,
    "tracing": 0,
    "_internal": 0,
    "backends": 1,
    "testing": 1,  # fakes and the stand-in: core and backends only
    "engine": 2,
    "graphs": 3,
    "tools": 4,
    "agents": 4,
    "memory": 4,
    "workflows": 5,
    "eval": 6,
    "apps": 7,
}

# Known breaks of the order, owned by the "first hour" issue (one-way imports); the test
# fails when one is fixed (so the list shrinks) or when a new one appears.
KNOWN: set[tuple[str, str]] = set()


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ponder" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_imports_flow_one_way() -> None:
    broken: set[tuple[str, str]] = set()
    where: dict[tuple[str, str], str] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        own = rel.parts[0].removesuffix(".py")
        if own not in RANK:
            continue
        for mod in _imports(path):
            target = _layer(mod)
            if target is None or target == own:
                continue
            if RANK[target] > RANK[own] or (RANK[target] == RANK[own] and (own, target) in KNOWN):
                broken.add((own, target))
                where.setdefault((own, target), f"{rel} imports {mod}")
    new = broken - KNOWN
    assert not new, "imports against the layer order: " + "; ".join(where[b] for b in new)
    fixed = KNOWN - broken
    assert not fixed, f"no longer broken, remove from KNOWN: {sorted(fixed)}"


def test_the_model_layer_never_imports_the_engine_or_what_runs_on_it() -> None:
    for path in (ROOT / "backends").rglob("*.py"):
        for mod in _imports(path):
            layer = _layer(mod)
            assert layer is None or RANK[layer] <= RANK["backends"], f"{path.name}: {mod}"


def _module_graph() -> dict[str, set[str]]:
    """Every ponder module -> the ponder modules it imports (``from pkg import sub``
    counts as importing the submodule ``pkg.sub``, not the package)."""
    mods: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = ("ponder", *path.relative_to(ROOT).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in mods] or [node.module]
            for t in targets:
                chain = t.split(".")
                while chain and ".".join(chain) not in mods:
                    chain.pop()
                if chain:
                    deps.add(".".join(chain))
        deps.discard(name)
        graph[name] = deps
    return graph


def test_no_two_modules_import_each_other_even_indirectly() -> None:
    """No import cycles at all (type-checking imports included): e.g. the Slack app
    depends on the run service protocol, never on the HTTP server that builds it."""
    graph = _module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_is_over_700_lines() -> None:
    """Rooms a newcomer can find: a module that grows past 700 lines is doing several jobs
    and is split by job (docs/architecture.md names where each job lives)."""
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 700
    }
    assert not long, f"split these by job: {long}"
