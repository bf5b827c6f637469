"""Loading workflow files (YAML or JSON) with errors that point at file:line."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from ponder.workflows._check import Problem, WorkflowError, check, pydantic_problems
from ponder.workflows._rebind import rebind
from ponder.workflows._spec import WorkflowSpec

if TYPE_CHECKING:  # the graph runtime loads only when a workflow is built
    from ponder.settings import Settings
    from ponder.workflows._build import Workflow

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "load_spec", "load_workflow", "workflow_schema"]

_SYNTHETIC = ("components", "params")


def _lines(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]
) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            out[(*path, k)] = key.start_mark.line + 1
            _lines(value, (*path, k), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _line_for(path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    candidates = [path, tuple(p for p in path if p not in _SYNTHETIC)]
    # a node's single component is written without a list: drop "components, 0"
    stripped: list[str | int] = []
    skip_next = False
    for p in path:
        if skip_next:
            skip_next = False
            if p == 0:
                continue
        if p == "components":
            skip_next = True
            continue
        if p != "params":
            stripped.append(p)
    candidates.append(tuple(stripped))
    for cand in candidates:
        for n in range(len(cand), -1, -1):
            if cand[:n] in lines:
                # for a component given by name ({generate: {...}}), the name's line
                return lines[cand[:n]]
    return None


MAX_FILE_BYTES = 1_000_000
"""Workflow files larger than this are refused before they are parsed."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a workflow file may have."""


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing aliases (a few hundred bytes of them can expand to
    gigabytes: the "billion laughs") and nesting deeper than ``MAX_DEPTH``."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in workflow files; write the value out",
                event.start_mark,
            )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested deeper than {MAX_DEPTH} levels",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise WorkflowError(
            [
                Problem(
                    (),
                    f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8",
                    line,
                )
            ],
            source=str(path),
        ) from None


def _unprintable(e: yaml.reader.ReaderError, text: str, path: Path) -> WorkflowError:
    """A character YAML does not allow, as a one-line error at its line and column."""
    pos = max(0, min(e.position, len(text)))
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    char = e.character if isinstance(e.character, str) else chr(e.character)
    return WorkflowError(
        [
            Problem(
                (),
                f"control character U+{ord(char):04X} at column {column}: a workflow file "
                "is text; remove it (an editor may show it as ^@, ^[ or nothing)",
                line,
            )
        ],
        source=str(path),
    )


def _read(path: Path) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise WorkflowError(
                [
                    Problem(
                        (),
                        f"the file has {size:,} bytes; a workflow file has at most "
                        f"{MAX_FILE_BYTES:,} (put data in a dataset, not the workflow)",
                    )
                ],
                source=str(path),
            )
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise WorkflowError(
            [Problem((), f"cannot read the file: {e.strerror}")], source=str(path)
        ) from None
    text = _decode(raw, path)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a control character: NUL, ESC, U+FFFE, ...
        raise _unprintable(e, text, path) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as e:
        raise _unprintable(e, text, path) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark is not None else None
        message = f"YAML syntax: {e.problem or e}" + (f" ({e.context})" if e.context else "")
        if "not allowed" in str(e.problem) or "nested deeper" in str(e.problem):
            message = str(e.problem)
        raise WorkflowError([Problem((), message, line)], source=str(path)) from None
    finally:
        loader.dispose()
    if node is None or not isinstance(data, dict):
        raise WorkflowError(
            [Problem((), "the file must hold a mapping (models:, layers: or nodes:, ...)", 1)],
            source=str(path),
        )
    lines: dict[tuple[str | int, ...], int] = {}
    _lines(node, (), lines)
    # a component written as {name: params}: make name-level paths resolvable too
    return data, lines


def _with_lines(problems: list[Problem], lines: dict[tuple[str | int, ...], int]) -> list[Problem]:
    out = []
    for p in problems:
        line = _line_for(p.path, lines)
        # components given as {generate: {...}}: look under their name as well
        if line is not None:
            out.append(Problem(p.path, p.message, line))
        else:
            out.append(p)
    return out


def _spec_keys() -> frozenset[str]:
    """Every key a workflow file's structure knows (for 'did you mean')."""
    from ponder.workflows import _spec

    keys: set[str] = set()
    for cls in vars(_spec).values():
        if isinstance(cls, type) and issubclass(cls, _spec._Spec):
            keys |= set(cls.model_fields)
    return frozenset(keys)


_SPEC_KEYS = _spec_keys()


def _known_keys(loc: tuple[str | int, ...]) -> frozenset[str]:
    """The keys that may stand at ``loc``: the top level's own, else any structural key."""
    return frozenset(WorkflowSpec.model_fields) if len(loc) == 1 else _SPEC_KEYS


def load_spec(path: str | Path) -> WorkflowSpec:
    """Read and validate a workflow file; every problem is reported with its line."""
    p = Path(path)
    data, lines = _read(p)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as e:
        problems = pydantic_problems(e, (), _known_keys)
        # an unknown top-level key must not hide the components' problems: check the rest
        extra = {str(err["loc"][0]) for err in e.errors()
                 if err["type"] == "extra_forbidden" and len(err["loc"]) == 1}  # fmt: skip
        if extra and isinstance(data, dict):
            try:
                rest = WorkflowSpec.model_validate(
                    {k: v for k, v in data.items() if k not in extra}
                )
            except ValidationError:
                pass
            else:
                problems += _under_names(check(rest), rest)
        raise WorkflowError(_with_lines(problems, lines), source=str(p)) from None
    problems = check(spec)
    if problems:
        raise WorkflowError(_with_lines(_under_names(problems, spec), lines), source=str(p))
    return spec


def _under_names(problems: list[Problem], spec: WorkflowSpec) -> list[Problem]:
    """Paths into a component's parameters also exist as ``...<component name>.<param>``
    in files that use the short form; add that spelling so the line can be found."""
    out = []
    nodes = spec.node_map()
    for p in problems:
        path = p.path
        if len(path) >= 2 and path[0] in ("layers", "nodes"):
            key = path[1]
            node = nodes.get(f"layer{key + 1}") if isinstance(key, int) else nodes.get(str(key))
            if node is not None:
                rest = list(path[2:])
                idx = 0
                if rest[:1] == ["components"] and len(rest) > 1 and isinstance(rest[1], int):
                    idx = rest[1]
                    rest = rest[2:]
                if idx < len(node.components) and rest and rest[0] not in ("model", "models"):
                    name = node.components[idx].component
                    layered = len(node.components) > 1
                    head: tuple[str | int, ...] = (path[0], key) + ((idx,) if layered else ())
                    path = (*head, name, *[r for r in rest if r != "params"])
        out.append(Problem(path, p.message, p.line))
    return out


def load_workflow(
    path: str | Path,
    *,
    settings: Settings | None = None,
    checkpoint: str | Path | None = None,
    models: Sequence[tuple[str, str]] | Mapping[str, str] = (),
) -> Workflow:
    """A runnable :class:`Workflow` from a YAML or JSON file; ``models`` rebinds its model
    names (glob patterns) to other references (``{"*": "vllm:M@http://h:8000/v1"}``)."""
    spec = rebind(load_spec(path), models)
    from ponder.workflows._build import Workflow

    return Workflow(spec, settings=settings, checkpoint=checkpoint, source=str(path))


def workflow_schema() -> str:
    """The JSON Schema of workflow files (for editor completion: ``ponder schema``)."""
    return json.dumps(WorkflowSpec.model_json_schema(by_alias=True), indent=2)
