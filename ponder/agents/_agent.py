"""Agents: a model with tools in a loop, until it answers or a budget ends.

:func:`run_agent` is the loop; the ``agent`` component runs ``n`` of them in parallel on
a pool's query and makes each a candidate whose ``trajectory`` keeps every turn (the
model's text, its tool calls, their results and errors). Since it is a component, every
technique composes with it: vote, verify, rank, fuse or best-of-N over agents' answers,
and ``generate`` with ``tools:`` is an agent per sample.

Every stop is clean: the answer so far and the trajectory are kept and ``stopped`` says
why (``answered``, ``max_steps``, ``max_tokens``, ``timeout``, ``loop``); cancellation
propagates after the tools in flight are cancelled.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from ponder import tracing
from ponder.agents._answers import AnswerKind
from ponder.agents._base import (
    LIVE_TEXT,
    _Config,
    _origin,
    _sample_provenance,
    _spend,
    register_component,
)
from ponder.agents._components import GENERATOR_SYSTEM, GenerateConfig
from ponder.agents._state import AgentStep, Candidate, Pool, Spend, ToolUse
from ponder.backends import Model
from ponder.errors import ConfigurationError
from ponder.tools import Tool, ToolResult, ToolSource, gather_tools, resolve_tools
from ponder.types import GenerateParams, Message, ToolCall, call_signature

__all__ = ["AGENT_SYSTEM", "Agent", "AgentConfig", "AgentRun", "run_agent"]

AGENT_SYSTEM = (
    "Solve the problem. You can call the tools you are given; use them for any computation "
    "or fact you are not sure of, then read their results. When you are done, give the "
    "final answer as \\boxed{ANSWER}."
)
_FINAL = (
    "Stop calling tools now. Using the tool results above, answer the question in one "
    "sentence, with the answer itself inside \\boxed{}."
)
_UNREADABLE = (
    "Your reply looks like a tool call, but it could not be read as one. Call a tool with "
    "one complete JSON object (its name and arguments), or answer the question with the "
    "answer itself inside \\boxed{}."
)
#: a reply that starts like a call object, fenced or not, is an attempt at a call
_CALL_ATTEMPT = re.compile(
    r'^\s*(?:```(?:json)?\s*)?(?:<tool_call>\s*)?[\[{]\s*"(?:name|function)"'
)
_TYPED = (
    "Now write your final answer as JSON matching this schema, using what the tools "
    "returned. Reply with the JSON only.\n{schema}"
)

Stopped = Literal["answered", "max_steps", "max_tokens", "timeout", "loop"]


@dataclass
class AgentRun:
    """What one agent run did: its final text, every turn, why it stopped, its spend."""

    text: str
    steps: list[AgentStep] = field(default_factory=list)
    stopped: Stopped = "answered"
    spend: Spend = field(default_factory=Spend)
    #: with ``output=``: the final answer as a validated object (None if none validated)
    value: BaseModel | None = None

    @property
    def tool_calls(self) -> int:
        return sum(len(s.tool_uses) for s in self.steps)


async def _call(tools: Mapping[str, Tool], call: ToolCall) -> ToolResult:
    t = tools.get(call.name)
    if t is None:
        known = ", ".join(tools) or "none"
        return ToolResult(call, f"Error: there is no tool {call.name!r} (tools: {known}).", True)
    if not tracing.enabled():
        return await t.call(call)
    attrs: dict[str, Any] = {"openinference.span.kind": "TOOL", "gen_ai.operation.name":
                             "execute_tool", "gen_ai.tool.name": call.name,
                             "gen_ai.tool.call.id": call.id}  # fmt: skip
    if tracing.capture_content():
        attrs["ponder.tool.arguments"] = call.arguments
    with tracing.span(f"execute_tool {call.name}", attrs) as s:
        r = await t.call(call)
        if s is not None:
            s.set_attributes({"ponder.tool.error": r.error, "ponder.tool.seconds": r.seconds})
            if tracing.capture_content():
                s.set_attributes({"ponder.tool.result": r.content})
        return r


async def run_agent(
    model: Model,
    prompt: str | Sequence[Message],
    tools: Sequence[Tool | ToolSource],
    *,
    system: str | None = AGENT_SYSTEM,
    params: GenerateParams | None = None,
    max_steps: int = 8,
    max_tokens: int | None = None,
    time_limit: float | None = None,
    repeat_limit: int = 2,
    on_step: Callable[[AgentStep], object] | None = None,
    on_text: Callable[[str], object] | None = None,
    output: type[BaseModel] | None = None,
) -> AgentRun:
    """Let ``model`` call ``tools`` until it answers.

    Each turn is one model call with the tools offered; the calls it asks for run
    concurrently and their results (or errors: unknown tool, invalid arguments, an
    exception, a timeout) go back as tool messages. It stops when the model answers
    without calling a tool, or after ``max_steps`` turns, ``max_tokens`` tokens (the
    run's total), ``time_limit`` seconds, or when it repeats the same calls more than
    ``repeat_limit`` times (a loop). After ``max_steps`` or a loop the model is asked once
    more, without tools, for its final answer. ``on_step`` sees each turn as it ends;
    ``on_text`` receives the final answer's text: as it is generated when the model is
    asked without tools, at the end of the turn when it answered a turn with tools.

    With ``output`` (a pydantic model), tools and typed answers compose: once the model
    has answered, one more turn asks for that answer as ``output``'s JSON (constrained
    where the backend can, validated, repaired once, as ``generate(output=...)``), and
    ``AgentRun.value`` holds the object (None, with the reason in the last step's text,
    when no reply validated).
    """
    if max_steps < 1:
        raise ConfigurationError("max_steps must be at least 1")
    have = await gather_tools(tools)  # an MCP server starts here, once
    by_name = {t.name: t for t in have}
    specs = tuple(t.spec for t in have)
    base = params or GenerateParams()
    with_tools = base.model_copy(update={"tools": specs, "n": 1})
    messages: list[Message] = []
    if system:
        messages.append(Message.system(system))
    messages += [Message.user(prompt)] if isinstance(prompt, str) else list(prompt)
    run = AgentRun(text="")
    seen: dict[str, int] = {}

    async def turn(p: GenerateParams, live: bool) -> tuple[str, tuple[ToolCall, ...]]:
        if live and on_text is not None:
            c = await model.generate_streamed(messages, on_text, p)
        else:
            c = await model.generate(messages, p)
        run.spend = run.spend + _spend(c)
        ch = c.choices[0]
        return ch.text, ch.tool_calls

    async def turns() -> bool:
        """The turns with tools; True when the model must still be asked for its answer
        (the step limit or a loop ended them)."""
        for _ in range(max_steps):
            if max_tokens is not None and run.spend.total_tokens >= max_tokens:
                run.stopped = "max_tokens"
                return False
            text, calls = await turn(with_tools, live=False)
            if not calls and _CALL_ATTEMPT.match(text):
                # only calls, none readable: never the answer; the model is told and tries
                # again (this turn counts against max_steps)
                record(AgentStep(text=text))
                messages.append(Message.assistant(text))
                messages.append(Message.user(_UNREADABLE))
                continue
            if not calls:
                # a turn that may call tools is read whole (a call is never shown as
                # text); the answer it turned out to be still reaches the live sink
                if on_text is not None and text:
                    on_text(text)
                run.text, run.stopped = text, "answered"
                record(AgentStep(text=text))
                return False
            messages.append(Message(role="assistant", content=text, tool_calls=calls))
            results = await asyncio.gather(*(_call(by_name, c) for c in calls))
            sig = call_signature(calls)
            seen[sig] = seen.get(sig, 0) + 1
            uses = tuple(
                ToolUse(id=r.call.id, name=r.call.name, arguments=r.call.arguments,
                        result=r.content, error=r.error, seconds=r.seconds,
                        attachments=r.attachments)
                for r in results
            )  # fmt: skip
            run.text = text
            record(AgentStep(text=text, tool_uses=uses))
            note = ""
            if seen[sig] > 1:
                note = (f"\n(You made exactly these calls {seen[sig]} times; the result "
                        "will not change. Use it, or answer.)")  # fmt: skip
            for r in results:
                messages.append(Message.tool(r.call.id, r.content + note, r.call.name))
            if seen[sig] > repeat_limit:
                run.stopped = "loop"
                return True
        run.stopped = "max_steps"
        return True

    async def typed(kind: type[BaseModel]) -> None:
        """The answer as a ``kind`` object: one more turn, without tools."""
        schema = json.dumps(kind.model_json_schema(), sort_keys=True)
        if run.text and (not messages or messages[-1].role != "assistant"):
            messages.append(Message.assistant(run.text))
        messages.append(Message.user(_TYPED.format(schema=schema)))
        c = await model.generate(messages, base.model_copy(update={"n": 1}), output=kind)
        run.spend = run.spend + _spend(c)
        ch = c.choices[0]
        run.value = ch.parsed if isinstance(ch.parsed, kind) else None
        record(AgentStep(text=ch.text))

    def record(step: AgentStep) -> None:
        run.steps.append(step)
        if on_step is not None:
            on_step(step)

    # the time limit covers the whole run: model turns and tool calls alike
    loop = asyncio.get_running_loop()
    when = None if time_limit is None else loop.time() + time_limit
    try:
        async with asyncio.timeout_at(when):
            ask = await turns()
            if ask and (max_tokens is None or run.spend.total_tokens < max_tokens):
                # one more turn, without tools: the answer from what the tools said so far
                messages.append(Message.user(_FINAL))
                run.text, _ = await turn(base.model_copy(update={"n": 1}), live=True)
                record(AgentStep(text=run.text))
            if output is not None and run.stopped in ("answered", "max_steps", "loop"):
                await typed(output)
    except TimeoutError:
        run.stopped = "timeout"
    return run


class AgentConfig(_Config):
    tools: tuple[str | dict[str, dict[str, Any] | None], ...] = Field(
        (),
        description="Tools by registry name (calculator, python, search, cheatsheet, mcp) "
        "or {name: {options}}.",
    )
    n: int = Field(1, ge=1, description="Agent runs in parallel, each one candidate.")
    max_steps: int = Field(8, ge=1, description="Model turns before it must answer.")
    max_tokens: int | None = Field(None, ge=1, description="Tokens of one agent run.")
    time_limit: float | None = Field(None, gt=0, description="Seconds of one agent run.")
    turn_max_tokens: int | None = Field(None, ge=1, description="max_tokens of each turn.")
    temperature: float | None = 0.8
    seed: int | None = 0
    system: str | None = AGENT_SYSTEM
    tool_choice: str | None = None
    parallel_tool_calls: bool | None = None
    answer_kind: AnswerKind = "auto"
    output: type[BaseModel] | None = Field(
        None,
        description="Typed final answers (Python): after its tool use, each run's answer is "
        "validated as this pydantic model (Candidate.value; the answer is its JSON).",
    )
    replace: bool = Field(False, description="Replace the pool's candidates instead of adding.")
    layer: int = 0


@register_component(config=AgentConfig, models="one")
class Agent:
    """``n`` agent runs (a model with tools, in a loop) on the pool's query; each becomes
    a candidate with its trajectory. Tools are :class:`ponder.tools.Tool` objects (Python)
    or names from the tool registry (YAML)."""

    name: ClassVar[str] = "agent"

    def __init__(
        self,
        model: Model,
        config: AgentConfig | None = None,
        tools: Sequence[Tool | ToolSource | Callable[..., Any]] = (),
    ) -> None:
        self.model = model
        self.config = config or AgentConfig()
        extra = [t if isinstance(t, Tool | ToolSource) else Tool(t) for t in tools]
        self.tools = resolve_tools([*self.config.tools, *extra])
        if not self.tools:
            raise ConfigurationError(
                "an agent needs at least one tool (tools: [calculator, python, ...])"
            )

    @classmethod
    def for_generate(cls, model: Model, cfg: GenerateConfig) -> Agent:
        """The agent behind ``generate`` with tools: each of its samples is a run of it
        (``generate`` finds this class through the component registry, as ``agent``)."""
        config = AgentConfig(
            tools=cfg.tools, n=cfg.n, max_steps=cfg.max_steps, temperature=cfg.temperature,
            turn_max_tokens=cfg.max_tokens, seed=cfg.seed, answer_kind=cfg.answer_kind,
            layer=cfg.layer, slot=cfg.slot, output=cfg.output,
            **({"system": cfg.system} if cfg.system != GENERATOR_SYSTEM else {}),
        )  # fmt: skip
        return cls(model, config)

    def _params(self, index: int) -> GenerateParams:
        cfg = self.config
        return GenerateParams.build(
            temperature=cfg.temperature,
            max_tokens=cfg.turn_max_tokens,
            seed=None if cfg.seed is None else cfg.seed + index,
            tool_choice=cfg.tool_choice,
            parallel_tool_calls=cfg.parallel_tool_calls,
        )

    async def run(self, pool: Pool, index: int = 0) -> tuple[Candidate, Spend]:
        """One agent run on ``pool``'s query as a candidate (sample ``index``)."""
        cfg = self.config
        system = pool.system if pool.system is not None else cfg.system
        sink = LIVE_TEXT.get() if cfg.n == 1 else None
        r = await run_agent(
            self.model,
            pool.query,
            self.tools,
            system=system,
            params=self._params(index),
            max_steps=cfg.max_steps,
            max_tokens=cfg.max_tokens,
            time_limit=cfg.time_limit,
            on_text=sink if cfg.output is None else None,  # the answer is the JSON
            output=cfg.output,
        )
        prefix = _origin(self.name, cfg, self.model.id, cfg.layer)
        if cfg.output is not None:
            return self._typed(prefix, index, r), r.spend
        cand = Candidate.read(
            id=prefix + str(index),
            text=r.text,
            kind=cfg.answer_kind,
            provenance=_sample_provenance(self.name, self.model, cfg.layer, cfg.seed, index),
            finish_reason="stop" if r.stopped == "answered" else r.stopped,
            trajectory=tuple(r.steps),
            spend=r.spend,
        )
        if r.stopped != "answered" and cand.answer is None:
            cand = cand.model_copy(update={"error": f"the agent stopped ({r.stopped})"})
        return cand, r.spend

    def _typed(self, prefix: str, index: int, r: AgentRun) -> Candidate:
        cfg = self.config
        assert cfg.output is not None
        prov = _sample_provenance(self.name, self.model, cfg.layer, cfg.seed, index)
        common: dict[str, Any] = {"id": prefix + str(index), "text": r.text, "provenance": prov,
                                  "trajectory": tuple(r.steps), "spend": r.spend}  # fmt: skip
        if r.value is None:
            why = f"the agent stopped ({r.stopped}) before a typed answer"
            if r.stopped not in ("timeout", "max_tokens"):
                why = f"the agent's answer is not a valid {cfg.output.__name__}"
            return Candidate(**common, error=why, finish_reason=r.stopped)
        value = r.value.model_dump(mode="json")
        return Candidate(**common, answer=json.dumps(value, sort_keys=True), value=value,
                         finish_reason="stop")  # fmt: skip

    async def __call__(self, pool: Pool) -> Pool:
        results = await asyncio.gather(*(self.run(pool, i) for i in range(self.config.n)))
        cands = [c for c, _ in results]
        spend = sum((s for _, s in results), Spend())
        calls = sum(len(s.tool_uses) for c in cands for s in c.trajectory)
        stops = sorted({c.finish_reason or "" for c in cands} - {"stop"})
        note = f"agent: {len(cands)} run(s), {calls} tool call(s)" + (
            f"; stopped by {', '.join(stops)}" if stops else ""
        )
        base = () if self.config.replace else pool.candidates
        out = pool.with_candidates(base + tuple(cands), spend)
        return out.model_copy(update={"notes": (*out.notes, note)})
