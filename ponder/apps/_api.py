"""The OpenAI-compatible wire of ``ponder serve``: the request schemas (chat messages,
client tools, ``response_format``), errors in OpenAI's shape, usage, and the OpenAPI
description clients and fuzzers read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse

from ponder.agents import Pool, Spend
from ponder.types import Message, ToolCall, ToolSpec
from ponder.workflows import Workflow

__all__ = ["ApiError", "ChatMessage", "ChatRequest", "openapi_schema", "usage_dict"]

# -- requests ------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """One message; ``content`` may be a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")

    def tool_calls(self) -> tuple[ToolCall, ...]:
        """An assistant turn's tool calls (OpenAI's shape); ValueError if malformed."""
        raw = (self.model_extra or {}).get("tool_calls")
        if not raw:
            return ()
        if not isinstance(raw, list):
            raise ValueError("tool_calls must be a list")  # noqa: TRY004 (a 422)
        calls = []
        for c in raw:
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ValueError(  # noqa: TRY004 (the request's 422)
                    "each tool call needs 'id' and 'function': {'name', 'arguments'}"
                )
            args = fn.get("arguments")
            calls.append(ToolCall(id=str(c.get("id") or ""), name=fn["name"],
                                  arguments=args if isinstance(args, str) else "{}"))  # fmt: skip
        return tuple(calls)


class ChatRequest(BaseModel):
    """The parts of an OpenAI chat request Ponder uses; sampling options are accepted and
    left to the workflow (its YAML sets temperatures, n and budgets)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=8, description="Distinct candidates to return.")
    stream_options: dict[str, Any] | None = None
    user: str | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """The first field a workflow cannot honour, and what to do, or None. Such a
        field is refused, never ignored. (A client's ``tools``, ``tool_choice``, tool
        turns and ``response_format`` are honoured: :meth:`client_tools`.)"""
        extra = self.model_extra or {}
        for name in ("functions", "function_call"):
            if extra.get(name) is not None:
                return name, (
                    "the legacy functions API is not supported; send the same functions as "
                    "'tools' (type 'function') and 'tool_choice'"
                )
        fmt = extra.get("response_format")
        if fmt is not None:
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if kind not in ("text", "json_object", "json_schema"):
                return "response_format", (
                    "give {'type': 'text'}, {'type': 'json_object'} or "
                    "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}"
                )
            if kind == "json_schema":
                js = fmt.get("json_schema")
                if not isinstance(js, dict) or not isinstance(js.get("schema"), dict):
                    return "response_format.json_schema", (
                        "it needs a 'schema' object (a JSON Schema), as OpenAI's API does"
                    )
        return None

    def answer_format(self) -> tuple[bool, dict[str, Any] | None]:
        """(whether a JSON answer is wanted, its schema or None for any JSON object)."""
        fmt = (self.model_extra or {}).get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
            return False, None
        if fmt["type"] == "json_object":
            return True, None
        return True, dict(fmt["json_schema"]["schema"])

    def client_tools(self) -> tuple[tuple[ToolSpec, ...], str | None, bool | None]:
        """The client's tools, tool choice and ``parallel_tool_calls``, validated; raises
        :class:`ApiError` (400) naming the field that is malformed."""
        extra = self.model_extra or {}
        raw = extra.get("tools")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise ApiError(
                400,
                "tools: must be a list of {'type': 'function', 'function': "
                "{'name', 'description', 'parameters'}}",
                code="invalid_tools",
            )
        specs: list[ToolSpec] = []
        for i, t in enumerate(raw):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
                raise ApiError(400, f"tools[{i}]: each tool must be {{'type': 'function', "
                               "'function': {...}}", code="invalid_tools")  # fmt: skip
            try:
                specs.append(ToolSpec(name=fn.get("name"), description=fn.get("description")
                                      or "", parameters=fn.get("parameters")
                                      or {"type": "object", "properties": {}}))  # fmt: skip
            except ValidationError as e:
                raise ApiError(
                    400, f"tools[{i}].function.{_first_error(e)}", code="invalid_tools"
                ) from None
        names = {s.name for s in specs}
        choice = extra.get("tool_choice")
        if isinstance(choice, dict):
            fn = choice.get("function")
            choice = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(choice, str):
                raise ApiError(400, "tool_choice: give 'auto', 'none', 'required' or "
                               "{'type': 'function', 'function': {'name': ...}}",
                               code="invalid_tool_choice")  # fmt: skip
        if choice is not None and not isinstance(choice, str):
            raise ApiError(400, "tool_choice: must be a string or an object",
                           code="invalid_tool_choice")  # fmt: skip
        if choice not in (None, "auto", "none", "required") and choice not in names:
            raise ApiError(
                400,
                f"tool_choice: {choice!r} is not among the tools ({', '.join(sorted(names))})",
                code="invalid_tool_choice",
            )
        if choice == "required" and not specs:
            raise ApiError(400, "tool_choice: 'required' needs tools", code="invalid_tool_choice")
        parallel = extra.get("parallel_tool_calls")
        return tuple(specs), choice, parallel if isinstance(parallel, bool) else None

    def tool_turns(self) -> bool:
        """Whether the conversation holds tool calls or results (a client's tool loop)."""
        return any(m.role == "tool" or m.tool_calls() for m in self.messages)

    def to_messages(self) -> list[Message]:
        """The conversation as Ponder messages (a tool loop's calls and results kept)."""
        out: list[Message] = []
        try:
            for m in self.messages:
                role = "system" if m.role == "developer" else m.role
                if role == "tool":
                    call_id = (m.model_extra or {}).get("tool_call_id")
                    out.append(Message.tool(str(call_id or ""), m.text()))
                else:
                    out.append(Message(role=role, content=m.text(), tool_calls=m.tool_calls()))
        except ValidationError as e:
            raise ValueError(e.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return out

    def to_pool(self) -> Pool:
        system = "\n\n".join(m.text() for m in self.messages if m.role in ("system", "developer"))
        turns = [m for m in self.messages if m.role in ("user", "assistant", "tool")]
        last_user = max((i for i, m in enumerate(turns) if m.role == "user"), default=None)
        if last_user is None:
            raise ValueError("the conversation needs a message from the user")
        after = turns[last_user + 1 :]
        if any(m.role == "assistant" and not m.tool_calls() for m in after):
            raise ValueError("the last non-system message must come from the user")
        history = "\n".join(_line(m) for m in turns[:last_user])
        query = turns[last_user].text()
        if history:
            query = f"Earlier in this conversation:\n{history}\n\n{query}"
        if after:  # a tool loop: the calls made for this question, and what they returned
            done = "\n".join(_line(m) for m in after)
            query = f"{query}\n\nTools were called for this question:\n{done}"
        return Pool(query=query, system=system or None)


def _first_error(e: ValidationError) -> str:
    """``where: what`` of a validation error's first problem (``messages.0.role: ...``)."""
    first = e.errors()[0]
    return f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"


def _line(m: ChatMessage) -> str:
    calls = m.tool_calls()
    if calls:
        said = f"{m.text()} " if m.text() else ""
        return f"assistant: {said}called " + ", ".join(f"{c.name}({c.arguments})" for c in calls)
    if m.role == "tool":
        return f"tool result: {m.text()}"
    return f"{m.role}: {m.text()}"


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {
            "error": {"message": self.message, "type": self.type, "param": None, "code": self.code}
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# -- the OpenAPI description (for clients and for fuzzing with schemathesis) ---------------


def openapi_schema(workflows: Mapping[str, Workflow]) -> dict[str, Any]:
    """OpenAPI 3.1 description of the HTTP API (``GET /openapi.json``)."""
    request = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = request.pop("$defs", {})
    request["properties"]["model"]["enum"] = sorted(workflows)
    schemas["ChatRequest"] = request
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def errors(*codes: int) -> dict[str, Any]:
        return {str(c): {"description": "error", **err} for c in codes}

    sse: dict[str, Any] = {"text/event-stream": {}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Ponder", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/health": {
                "get": {"security": [], "responses": {"200": {"description": "ok"}}},
            },
            "/v1/models": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "the workflows",
                            "content": {"application/json": {}},
                        },
                        **errors(401, 403, 429),
                    }
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ChatRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "a completion, or its stream",
                            "content": {"application/json": {}, **sse},
                        },
                        **errors(400, 401, 403, 404, 413, 415, 422, 429, 500, 502),
                    },
                }
            },
            "/v1/runs/{run_id}/events": {
                "get": {
                    "parameters": [
                        {
                            "name": "run_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "the run's events", "content": sse},
                        **errors(401, 403, 404),
                    },
                }
            },
        },
    }


def usage_dict(spend: Spend) -> dict[str, Any]:
    """OpenAI's usage object for a run: tokens generated now, and in
    ``prompt_tokens_details.cached_tokens`` the tokens served from the response cache
    (billed nothing; counted in neither prompt nor completion tokens)."""
    return {
        "prompt_tokens": spend.prompt_tokens,
        "completion_tokens": spend.completion_tokens,
        "total_tokens": spend.total_tokens,
        "prompt_tokens_details": {"cached_tokens": spend.cached_tokens},
        "ponder_saved_cost": spend.saved_cost,
    }


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a decoded JSON value (iteratively: a deep
    body cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in v)
    return deepest
