"""Typed tools from Python functions: what a model is told of them, and calling them safely.

A function's name, docstring and signature give the tool's name, description and JSON
Schema (through pydantic, so every type pydantic validates works: numbers, literals,
enums, lists, nested models). A call's arguments are validated before the function runs;
bad arguments, an exception or a timeout come back as an error result the model can read
and correct, never as an exception in the run.

>>> @tool
... def add(a: int, b: int) -> int:
...     '''Add two integers.
...
...     Args:
...         a: the first addend
...         b: the second addend
...     '''
...     return a + b
>>> add.spec.name, add.spec.description
('add', 'Add two integers.')
>>> add.spec.parameters["properties"]["a"]
{'description': 'the first addend', 'type': 'integer'}
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, get_type_hints, overload, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ponder.errors import ConfigurationError, ToolExecutionError
from ponder.types import Attachment, ToolCall, ToolSpec

__all__ = ["Tool", "ToolOutput", "ToolResult", "ToolSource", "tool", "tools_by_name"]

#: Longest tool result handed back to the model (characters); the rest is cut, and said so.
MAX_RESULT_CHARS = 16_000


@runtime_checkable
class ToolSource(Protocol):
    """Something that provides tools once it is started, asynchronously (an MCP server):
    agents await ``tools()`` before their first turn."""

    async def tools(self) -> list[Tool]: ...


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One call's outcome: the text the model is given (the function's return value, or
    what went wrong), whether it is an error, and how long it took."""

    call: ToolCall
    content: str
    error: bool = False
    seconds: float = 0.0
    #: binary content (images, audio, blobs), typed; ``content`` describes it for the model
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class ToolOutput:
    """What a tool function may return to give binary content besides its text: the
    text the model reads and the typed ``attachments`` (kept in the result and in the
    agent's trajectory)."""

    text: str
    attachments: tuple[Attachment, ...] = ()


_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Example)s?:?\s*$")


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """The description (the docstring before its argument section) and each argument's
    description, from Google (``Args:``), NumPy (``Parameters``) or Sphinx (``:param x:``)
    docstrings."""
    if not doc:
        return "", {}
    args: dict[str, str] = {}
    for m in re.finditer(r":param\s+(?:[^:]*\s)?(\w+):\s*(.+)", doc):
        args[m.group(1)] = m.group(2).strip()
    lines = doc.splitlines()
    head: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(
            r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Example)s?:?\s*$", line
        ) or (line.strip().startswith(":param")):
            break
        head.append(line)
        i += 1
    section = None
    current: str | None = None
    for line in lines[i:]:
        title = re.match(r"^\s*(\w+):?\s*$", line)
        if title and title.group(1) in ("Args", "Arguments", "Parameters", "Returns", "Raises"):
            section, current = title.group(1), None
            continue
        if section in ("Args", "Arguments", "Parameters"):
            item = re.match(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if item and not set(line.strip()) <= {"-"}:
                current = item.group(1)
                args.setdefault(current, item.group(2).strip())
            elif current and line.strip() and not set(line.strip()) <= {"-"}:
                args[current] = (args[current] + " " + line.strip()).strip()
    description = "\n".join(head).strip()
    return re.sub(r"\s*\n\s*", " ", description), {k: v for k, v in args.items() if v}


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's JSON Schema without its titles (noise to a model)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out


class Tool:
    """A Python function (sync or async) as a tool a model can call.

    ``name`` and ``description`` default to the function's name and docstring; each
    argument's description comes from the docstring's argument section. ``timeout`` bounds
    one call (seconds; a sync function runs in a worker thread, which is left to finish in
    the background when it overruns). ``spec`` is what the model is told.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "tool"))
        self.timeout = timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        doc_description, arg_docs = _doc_parts(inspect.getdoc(fn) or "")
        try:
            hints = get_type_hints(fn, include_extras=True)
        except Exception as e:  # a name the annotations use is not importable here
            raise ConfigurationError(f"tool {self.name}: cannot read its type hints: {e}") from e
        fields: dict[str, Any] = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ConfigurationError(
                    f"tool {self.name}: *{p.name} cannot be described to a model; "
                    "give each argument a name and a type"
                )
            annotation = hints.get(p.name, Any)
            default = ... if p.default is p.empty else p.default
            fields[p.name] = (annotation, Field(default, description=arg_docs.get(p.name)))
        self._schema_check: Callable[[dict[str, Any]], None] = _no_check
        model: type[BaseModel] = create_model(
            f"{self.name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        self.arguments: type[BaseModel] | None = model
        try:
            schema = _clean_schema(model.model_json_schema())
        except Exception as e:
            raise ConfigurationError(
                f"tool {self.name}: its arguments have no JSON Schema ({e})"
            ) from e
        schema.setdefault("properties", {})
        self.spec = ToolSpec(
            name=self.name, description=description or doc_description, parameters=schema
        )

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: Mapping[str, Any],
        fn: Callable[..., Any],
        *,
        timeout: float | None = 30.0,
    ) -> Tool:
        """A tool whose arguments are described by a JSON Schema rather than a Python
        signature (an MCP server's tools): arguments are checked against the schema
        (with ``jsonschema`` where it is installed, else for an object with the required
        keys) and passed to ``fn`` as keyword arguments."""
        self = cls.__new__(cls)
        self.fn, self.name, self.timeout = fn, name, timeout
        self.is_async = inspect.iscoroutinefunction(fn)
        schema = dict(parameters)
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.arguments = None
        self._schema_check = _schema_checker(schema)
        self.spec = ToolSpec(name=name, description=description, parameters=schema)
        return self

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself (the tool stays usable as a plain function)."""
        return self.fn(*args, **kwargs)

    def validate(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """The validated arguments as keyword arguments; raises ValueError saying what is
        wrong (not JSON, not an object, a missing, unknown or ill-typed argument)."""
        if isinstance(arguments, str):
            try:
                data = json.loads(arguments or "{}")
            except ValueError as e:
                raise ValueError(f"the arguments are not valid JSON ({e})") from None
        else:
            data = dict(arguments)
        if not isinstance(data, dict):
            raise ValueError(  # noqa: TRY004 - told to the model, as every argument problem
                f"the arguments must be a JSON object, got {type(data).__name__}"
            )
        if self.arguments is None:  # described by a JSON Schema
            self._schema_check(data)
            return data
        try:
            model = self.arguments.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or 'arguments'}: {err['msg']}"
                for err in e.errors()
            )
            raise ValueError(f"invalid arguments: {problems}") from None
        return {k: getattr(model, k) for k in type(model).model_fields}

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one call. Never raises for the call's own faults: invalid arguments, an
        exception in the function and a timeout are error results that say what happened,
        for the model to read (cancellation still propagates)."""
        start = time.perf_counter()

        def result(
            content: str, error: bool = False, attachments: tuple[Attachment, ...] = ()
        ) -> ToolResult:
            if len(content) > MAX_RESULT_CHARS:
                cut = len(content) - MAX_RESULT_CHARS
                content = content[:MAX_RESULT_CHARS] + f"\n[... {cut} more characters cut]"
            return ToolResult(call, content, error, time.perf_counter() - start, attachments)

        try:
            kwargs = self.validate(call.arguments)
        except ValueError as e:
            return result(f"Error: {e}. Call {self.name} again with arguments that match its "
                          "schema.", True)  # fmt: skip
        try:
            if self.is_async:
                value = await asyncio.wait_for(self.fn(**kwargs), self.timeout)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(self.fn, **kwargs), self.timeout)
        except TimeoutError:
            return result(f"Error: {self.name} did not finish within {self.timeout:g} s.", True)
        except ToolExecutionError as e:  # the tool's own words (an MCP server's error): once
            said = str(e)
            return result(said if said.lower().startswith("error") else f"Error: {said}", True)
        except Exception as e:
            return result(f"Error: {self.name} raised {type(e).__name__}: {e}", True)
        if isinstance(value, ToolOutput):
            return result(value.text, attachments=value.attachments)
        return result(_text(value))


def _no_check(_data: dict[str, Any]) -> None:
    return None


def _schema_checker(schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A check of arguments against ``schema`` that raises ValueError saying what is
    wrong: full JSON Schema with ``jsonschema``, else the required keys."""
    try:
        import jsonschema
    except ImportError:
        required = [str(k) for k in schema.get("required") or ()]

        def keys(data: dict[str, Any]) -> None:
            missing = [k for k in required if k not in data]
            if missing:
                raise ValueError(f"invalid arguments: missing {', '.join(missing)}")

        return keys
    validator = jsonschema.Draft202012Validator(schema)

    def check(data: dict[str, Any]) -> None:
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}"
                for e in errors[:10]
            )
            raise ValueError(f"invalid arguments: {problems}")

    return check


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = 30.0
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = 30.0,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a :class:`Tool`: ``@tool`` or ``@tool(name=..., timeout=...)``."""
    if fn is not None:
        return Tool(fn, name=name, description=description, timeout=timeout)

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, timeout=timeout)

    return wrap


def tools_by_name(tools: Iterable[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    """Tools (or plain functions, made tools) by name; two tools of one name are an error."""
    out: dict[str, Tool] = {}
    for item in tools:
        t = item if isinstance(item, Tool) else Tool(item)
        if t.name in out:
            raise ConfigurationError(f"two tools are named {t.name!r}: rename one (name=...)")
        out[t.name] = t
    return out
