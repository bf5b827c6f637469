"""Tool calling for models and servers without a native tool API: constrained JSON.

The tools are described in the system prompt, and the reply is constrained (the
provider's JSON-schema mode: a grammar on llama.cpp and the embedded backend, guided
decoding on vLLM) to one of ``{"tool": NAME, "arguments": {...}}`` per tool or
``{"answer": "..."}``. A call becomes a :class:`ToolCall` on the choice, an answer its
text; earlier calls and results are written back into the conversation the same way, so
the agent loop does not know the difference. Used where the provider's quirks say
``tools="json"`` (the embedded backend).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from ponder.backends._parts import ModelCore
from ponder.types import Choice, Completion, GenerateParams, Message, ToolCall, ToolSpec

__all__ = ["from_json_choice", "generate_json_tools", "to_json_request"]


def _schema(tools: Sequence[ToolSpec], choice: str | None) -> dict[str, Any]:
    chosen = [t for t in tools if choice in (None, "auto", "required") or t.name == choice]
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
            "required": ["tool", "arguments"],
        }
        for t in chosen
    ]
    if choice in (None, "auto"):
        options.append(
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _instruction(tools: Sequence[ToolSpec]) -> str:
    lines = [
        "You can call these tools. To call one, reply with only "
        '{"tool": "<name>", "arguments": {...}}; you will get its result. When you know '
        'the final answer, reply with only {"answer": "<your answer>"}.',
        "Tools:",
    ]
    for t in tools:
        lines.append(f"- {t.name}: {t.description} Arguments (JSON Schema): "
                     f"{json.dumps(t.parameters)}")  # fmt: skip
    return "\n".join(lines)


def to_json_request(
    messages: Sequence[Message], params: GenerateParams
) -> tuple[list[Message], GenerateParams]:
    """The conversation and params to send instead: tools in the system prompt, tool
    turns as text, the reply constrained to a call or an answer."""
    out: list[Message] = []
    for m in messages:
        if m.role == "tool":
            out.append(Message.user(f"Result of {m.name or 'the tool'}: {m.content}"))
        elif m.tool_calls:
            call = m.tool_calls[0]
            try:
                args = json.loads(call.arguments or "{}")
            except ValueError:
                args = {}
            out.append(Message.assistant(json.dumps({"tool": call.name, "arguments": args})))
        else:
            out.append(m)
    if params.tool_choice == "none":  # no call this turn: the history as text, no schema
        return out, params.model_copy(
            update={"tools": (), "tool_choice": None, "parallel_tool_calls": None}
        )
    text = _instruction(params.tools)
    if out and out[0].role == "system":
        out[0] = Message.system(out[0].content + "\n\n" + text)
    else:
        out.insert(0, Message.system(text))
    sent = params.model_copy(
        update={
            "tools": (),
            "tool_choice": None,
            "parallel_tool_calls": None,
            "json_schema": _schema(params.tools, params.tool_choice),
        }
    )
    return out, sent


def from_json_choice(choice: Choice, index: int = 0) -> Choice:
    """A constrained reply as the agent loop expects it: a tool call, or the answer."""
    try:
        data = json.loads(choice.text)
    except ValueError:
        return choice  # cut off (max_tokens): left as text, which has no answer
    if isinstance(data, dict) and isinstance(data.get("tool"), str):
        call = ToolCall(
            id=f"call_{choice.index}_{index}",
            name=data["tool"],
            arguments=json.dumps(data.get("arguments") or {}),
        )
        return dataclasses.replace(choice, text="", tool_calls=(call,), finish_reason="tool_calls")
    if isinstance(data, dict) and "answer" in data:
        return dataclasses.replace(choice, text=str(data["answer"]))
    return choice


async def generate_json_tools(
    model: ModelCore, messages: list[Message], p: GenerateParams, use_cache: bool
) -> Completion:
    """Tools on a backend without a tool API: the request as constrained JSON, each reply
    read back as a call or an answer."""
    sent, sp = to_json_request(messages, p)
    c = await model._generate(sent, sp, use_cache=use_cache, overrides={})
    if not sp.json_schema:
        return c
    turn = sum(1 for m in messages if m.role == "assistant")
    return dataclasses.replace(c, choices=tuple(from_json_choice(ch, turn) for ch in c.choices))
