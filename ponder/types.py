"""Typed values that cross module boundaries: messages, sampling parameters, completions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from ponder.errors import ConfigurationError

__all__ = [
    "Attachment",
    "Choice",
    "Completion",
    "FinishReason",
    "GenerateParams",
    "Message",
    "Role",
    "StreamChunk",
    "TokenLogprob",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "as_messages",
    "call_signature",
    "canonical_arguments",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error", "unknown"]


class ToolCall(BaseModel):
    """A model's request to call a tool: its ``id`` (to match the result), the tool's
    ``name`` and the ``arguments`` as the JSON text the model wrote (it may be invalid:
    the tool layer validates it and tells the model what is wrong)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    arguments: str = "{}"


class Attachment(BaseModel):
    """Binary content a tool returned (an MCP server's image, audio or blob resource),
    kept typed beside the text the model reads: ``kind``, ``mime_type``, the bytes as
    base64 ``data`` (JSON-safe, as checkpoints need) and the resource's ``uri``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["image", "audio", "blob"]
    mime_type: str = "application/octet-stream"
    data: str = Field("", description="The content, base64-encoded.")
    uri: str | None = None

    def content(self) -> bytes:
        """The decoded bytes."""
        import base64

        return base64.b64decode(self.data)


def canonical_arguments(arguments: str) -> str:
    """A call's JSON arguments with sorted keys and one spacing (invalid JSON as it is),
    so two spellings of one call compare equal."""
    try:
        return json.dumps(json.loads(arguments), sort_keys=True)
    except ValueError:
        return arguments


def call_signature(calls: Sequence[ToolCall]) -> str:
    """What a set of calls asks for, order and argument spelling aside (ids ignored): the
    same signature means the same calls (repeats in an agent loop, votes on a turn)."""
    return json.dumps(sorted((c.name, canonical_arguments(c.arguments)) for c in calls))


def _empty_object() -> dict[str, JsonValue]:
    return {"type": "object", "properties": {}}


class ToolSpec(BaseModel):
    """A tool as a model is told of it: name, description, JSON Schema of the arguments
    (``ponder.tools.Tool`` builds one from a Python function)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, JsonValue] = Field(default_factory=_empty_object)


class Message(BaseModel):
    """One chat message.

    An assistant message may carry ``tool_calls``; a ``tool`` message is one call's
    result, with the call's ``tool_call_id`` (and the tool's ``name``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _tool_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only an assistant message can carry tool_calls")
        return self

    @classmethod
    def tool(cls, call_id: str, content: str, name: str | None = None) -> Message:
        return cls(role="tool", content=content, tool_call_id=call_id, name=name)

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str) -> Message:
        return cls(role="assistant", content=content)


def as_messages(prompt: str | Message | Sequence[Message | dict[str, Any]]) -> list[Message]:
    """Accept a bare string (one user message), a message, or a list of messages/dicts."""
    if isinstance(prompt, str):
        return [Message(role="user", content=prompt)]
    if isinstance(prompt, Message):
        return [prompt]
    out: list[Message] = []
    for i, m in enumerate(prompt):
        if isinstance(m, Message):
            out.append(m)
            continue
        try:
            out.append(Message.model_validate(m))
        except ValidationError as e:
            raise ConfigurationError(
                f"message {i} is not a valid chat message ({e.errors()[0]['msg']}); "
                "expected {'role': 'system'|'user'|'assistant', 'content': str}"
            ) from None
    if not out:
        raise ConfigurationError("the message list is empty: pass at least one message")
    return out


class GenerateParams(BaseModel):
    """Sampling options for one generation call.

    ``None`` means "the provider's default" and is not sent. ``extra`` passes
    provider-specific sampling parameters through unchanged (vLLM's ``top_k``,
    ``min_p``, ``repetition_penalty``, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(1, ge=1, le=4096, description="Number of completions to return.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    json_schema: dict[str, JsonValue] | None = Field(
        None, description="Constrain the output to this JSON Schema (response_format)."
    )
    prefill: str | None = Field(
        None, description="Start of the assistant's answer; the model continues it."
    )
    timeout: float | None = Field(None, gt=0.0, description="Seconds for one HTTP attempt.")
    tools: tuple[ToolSpec, ...] = Field((), description="Tools the model may call.")
    tool_choice: str | None = Field(
        None,
        description="'auto' (the default with tools), 'none', 'required' (some tool), or a "
        "tool's name (that tool).",
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Whether one turn may call several tools (None: the provider's way)."
    )
    extra: dict[str, JsonValue] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _schema_from_model(cls, data: Any) -> Any:
        # json_schema=MyModel: the JSON Schema of a pydantic model (or TypeAdapter-able type)
        if isinstance(data, dict):
            js = data.get("json_schema")
            if isinstance(js, type) and issubclass(js, BaseModel):
                data = {**data, "json_schema": js.model_json_schema()}
            tools = data.get("tools")
            if tools:
                data = {**data, "tools": tuple(getattr(t, "spec", t) for t in tools)}
        return data

    @model_validator(mode="after")
    def _check(self) -> GenerateParams:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=True")
        if self.tool_choice not in (None, "auto", "none", "required") and self.tool_choice not in {
            t.name for t in self.tools
        }:
            raise ValueError(
                f"tool_choice {self.tool_choice!r} is neither 'auto', 'none', 'required' nor "
                f"one of the tools ({', '.join(t.name for t in self.tools) or 'none given'})"
            )
        return self

    @classmethod
    def build(cls, base: GenerateParams | None = None, **overrides: Any) -> GenerateParams:
        """Validate ``overrides`` on top of ``base``; invalid values raise ConfigurationError."""
        data: dict[str, Any] = base.model_dump(exclude_unset=True) if base is not None else {}
        data.update(overrides)
        if isinstance(data.get("stop"), str):
            data["stop"] = (data["stop"],)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "params"
            raise ConfigurationError(
                f"invalid generation parameter {where}={err.get('input')!r}: {err['msg']}"
            ) from None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token, its log-probability and the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``cache_read``/``cache_write`` are provider prompt-cache tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(frozen=True, slots=True)
class Choice:
    """One sampled completion. ``text`` includes the prefill when one was given."""

    index: int
    text: str
    finish_reason: FinishReason = "stop"
    logprobs: tuple[TokenLogprob, ...] | None = None
    cached: bool = False
    usage: Usage | None = None  # this sample's share of its request's usage
    tool_calls: tuple[ToolCall, ...] = ()  # the tools the model asked to call
    parsed: Any = None  # the validated object, for generate(..., output=Model)

    @property
    def mean_logprob(self) -> float | None:
        """Mean token log-probability, or None without logprobs."""
        if not self.logprobs:
            return None
        return sum(t.logprob for t in self.logprobs) / len(self.logprobs)


@dataclass(frozen=True, slots=True)
class Completion:
    """The answer to one ``generate`` call: ``n`` choices, the usage billed and its cost.

    Choices served from the response cache are marked ``cached`` and bill nothing:
    ``cached_usage`` is what they used when they were first generated and
    ``saved_cost`` what they would have cost now.
    """

    model: str
    choices: tuple[Choice, ...]
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    requests: int = 0
    cached_usage: Usage = field(default_factory=Usage)
    saved_cost: float = 0.0

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.choices]


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed completion; ``finish_reason`` is set on a choice's last chunk."""

    index: int
    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # complete calls, on a choice's last chunk
