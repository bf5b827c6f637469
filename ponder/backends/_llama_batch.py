"""Continuous batching on llama.cpp: the scheduler behind the embedded ``local`` backend.

One worker thread owns the model's llama.cpp context and runs a loop of decode steps. A
request (one prompt, ``n`` samples) is tokenized on that thread, its prompt is evaluated
once into one sequence, and the prompt's KV cells are shared with the request's other
sequences (llama.cpp's unified KV cache: one more owner per cell, no copy, no compute);
from then on every active sequence of every request advances by one token per
``llama_decode`` call. Requests that arrive while others run join the running batch at
the next step, up to ``max_sequences`` sequences and ``kv_cells`` cells, first come first
served. A group reserves its worst case (the prompt once, plus ``max_tokens`` per
sample) before it starts, so a running batch never runs out of cells. A prompt whose first
16 or more tokens a running request already evaluated (a shared system prompt) takes those
cells too, and only the rest is evaluated.

Each sequence has its own sampler chain (its own seed, penalties and grammar), stop
strings, token streaming and cancellation.

Reproducibility: a request with a seed, run while nothing else runs, gives the same
samples every time (the KV cache is cleared whenever the engine goes idle, and a prompt is
evaluated on its own, never mixed with other requests' tokens; alone, it shares no prefix).
Under concurrency the batch a sequence decodes in changes the order of floating-point sums
inside llama.cpp's kernels, so a sampled token may differ in rare near-ties; the response
cache (keyed per sample index) still makes reruns of a workflow reproducible.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ponder.backends._llama_cpu import load_library
from ponder.errors import ConfigurationError
from ponder.types import FinishReason

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaContext, LlamaModel

__all__ = ["BatchEngine", "EngineStats", "SampleOut", "Sampling"]

_PENALTY_LAST_N = 64  # llama-cpp-python's default window for repeat_penalty
# a shorter common prefix is evaluated anew: sharing it would save less than a decode step
_MIN_SHARED_PREFIX = 16


@dataclass
class EngineStats:
    """What one engine did: prompts evaluated vs copied, tokens generated, batch sizes."""

    requests: int = 0
    samples: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_reused: int = 0
    prefix_tokens_shared: int = 0  # prompt tokens taken from a running request's cells
    generated_tokens: int = 0
    cancelled: int = 0
    decode_steps: int = 0
    batched_tokens: int = 0
    peak_sequences: int = 0

    @property
    def mean_batch(self) -> float:
        """Sequences per decode step, on average."""
        return self.batched_tokens / self.decode_steps if self.decode_steps else 0.0


@dataclass(frozen=True, slots=True)
class Sampling:
    """How the samples of one request are drawn (resolved defaults, no ``None``)."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    max_tokens: int
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF text


@dataclass(frozen=True, slots=True)
class SampleOut:
    """One finished sample: its text (without the prefill), token count and end reason."""

    text: str
    tokens: int
    finish: FinishReason


class _Cancelled(Exception):
    """The awaiting task was cancelled; the request's sequences were dropped."""


#: A request's prompt, tokenized on the worker thread (it needs the loaded model)
Tokenize = Callable[["LlamaModel"], list[int]]
#: Streamed text of sample ``index``
OnText = Callable[[int, str], None]


@dataclass(eq=False)
class _Request:
    tokenize: Tokenize
    sampling: Sampling
    seeds: list[int]
    on_text: OnText | None
    done: Callable[[list[SampleOut] | None, BaseException | None], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] | None = None
    pending: deque[int] = field(default_factory=deque)
    results: dict[int, SampleOut] = field(default_factory=dict)
    running: int = 0
    finished: bool = False


@dataclass(eq=False)
class _Group:
    """Sequences admitted together: they share the prompt's KV cells."""

    prompt: int
    tokens: list[int]
    seqs: list[int]  # its sequences still running (each owns the prompt's cells)


@dataclass(eq=False)
class _Seq:
    seq_id: int
    req: _Request
    index: int
    sampler: Any  # llama_sampler_p
    group: _Group
    pos: int  # the position of the last token fed (the next token goes at pos + 1)
    limit: int
    hold: int
    last: int = 0
    out: int = 0
    raw: bytes = b""
    sent: int = 0
    ended: bool = False


class BatchEngine:
    """One GGUF model and the thread that decodes every request's samples in one batch.

    ``n_ctx`` is the context window of each sequence (prompt plus answer);
    ``max_sequences`` how many sequences decode together; ``kv_cells`` the size of the KV
    cache they share (default ``4 x n_ctx``, at least ``n_ctx``); ``flash_attn`` uses
    llama.cpp's flash attention (faster here; its f16 accumulation can change near-tied
    greedy tokens against llama-cpp-python's default).
    """

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int,
        n_threads: int,
        max_sequences: int,
        n_batch: int = 512,
        kv_cells: int = 0,
        flash_attn: bool = True,
        on_load: Callable[[LlamaModel], None] | None = None,
    ) -> None:
        if max_sequences < 1:
            raise ConfigurationError(f"max_sequences must be >= 1, got {max_sequences}")
        self.path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_sequences = max_sequences
        self.n_batch = min(n_batch, n_ctx)
        self.flash_attn = flash_attn
        # llama.cpp sizes the cache in multiples of 256 cells; at least one window
        self.kv_cells = -(-max(kv_cells or n_ctx * 4, n_ctx) // 256) * 256
        self.stats = EngineStats()
        self._on_load = on_load
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._model: LlamaModel | None = None
        self._ctx: LlamaContext | None = None
        self._batch: Any = None
        self._eog: frozenset[int] = frozenset()
        self._active: list[_Seq] = []
        self._free: list[int] = list(range(max_sequences - 1, -1, -1))
        self._cells_free = self.kv_cells

    # -- the async side ---------------------------------------------------------------

    async def generate(
        self,
        tokenize: Tokenize,
        sampling: Sampling,
        seeds: Sequence[int],
        on_text: OnText | None = None,
    ) -> tuple[list[SampleOut], int]:
        """``len(seeds)`` samples of one prompt: the samples in order and the prompt's
        token count. Cancelling the caller stops its sequences at the next step."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[list[SampleOut], int]] = loop.create_future()

        def done(out: list[SampleOut] | None, error: BaseException | None) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if error is not None:
                    fut.set_exception(error)
                else:
                    assert out is not None
                    assert req.tokens is not None
                    fut.set_result((out, len(req.tokens)))

            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(settle)

        req = _Request(tokenize, sampling, list(seeds), on_text, done)
        req.pending.extend(range(len(seeds)))
        self._submit(req)
        try:
            return await fut
        except asyncio.CancelledError:
            req.cancel.set()
            with self._cond:
                self._cond.notify()
            raise

    def _submit(self, req: _Request) -> None:
        with self._cond:
            if self._closing:
                raise ConfigurationError("the local engine has been shut down")
            self._queue.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ponder-local", daemon=True)
                self._thread.start()
                atexit.register(self.shutdown)
            self._cond.notify()

    def call(self, job: Callable[[LlamaModel], Any]) -> Any:
        """Run ``job(model)`` with the model loaded (tokenizer, metadata); thread-safe for
        read-only use of the model."""
        return job(self._load())

    def shutdown(self) -> None:
        """Stop the worker thread (at interpreter exit); queued requests fail."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    # -- the worker thread ------------------------------------------------------------

    def _load(self) -> LlamaModel:
        with self._load_lock:
            if self._model is not None:
                return self._model
            load_library()  # the CPU kernels this machine runs best, before llama_cpp loads
            import llama_cpp
            from llama_cpp._internals import LlamaModel

            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            params = llama_cpp.llama_model_default_params()
            try:
                model = LlamaModel(path_model=self.path, params=params, verbose=False)
            except (ValueError, RuntimeError, OSError) as e:
                raise ConfigurationError(
                    f"llama.cpp could not load {self.path}: {e}. The file may be corrupt or "
                    "of an architecture this llama-cpp-python does not support"
                ) from None
            vocab = model.vocab
            self._eog = frozenset(
                t for t in range(model.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)
            )
            if self._on_load is not None:
                self._on_load(model)
            self._model = model
            return model

    def _context(self) -> LlamaContext:
        if self._ctx is not None:
            return self._ctx
        import llama_cpp
        from llama_cpp._internals import LlamaContext

        model = self._load()
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = self.kv_cells
        p.n_batch = max(self.n_batch, self.max_sequences)
        p.n_ubatch = max(self.n_batch, self.max_sequences)
        p.n_seq_max = self.max_sequences
        # one cache for all sequences: a group's prompt cells are shared, not copied, and
        # llama.cpp's per-sequence streams measured 1.8x slower per step at 16 sequences
        p.kv_unified = True
        # flash attention: 9.1 vs 13.5 ms per step at 1 sequence, 79 vs 90 ms at 16, on
        # SmolLM2 with 2 threads (docs/local.md "Batching")
        p.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if self.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        p.n_threads = self.n_threads
        p.n_threads_batch = self.n_threads
        try:
            self._ctx = LlamaContext(model=model, params=p, verbose=False)
        except ValueError as e:
            raise ConfigurationError(
                f"llama.cpp could not create a context of {self.max_sequences} x "
                f"{self.n_ctx} tokens for {self.path}: {e}; lower PONDER_LOCAL_N_CTX or "
                "PONDER_LOCAL_MAX_SEQUENCES"
            ) from None
        self._batch = llama_cpp.llama_batch_init(p.n_batch, 0, 1)
        return self._ctx

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._active and not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    self._fail_all(ConfigurationError("the local engine has been shut down"))
                    return
                fresh = [r for r in self._queue if r.tokens is None]
            for req in fresh:
                self._tokenize(req)
            with self._cond:
                admitted = self._take()
            for req, indices, limit in admitted:
                self._admit(req, indices, limit)
            self._drop_cancelled()
            if self._active:
                self._step()
            elif not self._queue:
                self._idle()

    def _tokenize(self, req: _Request) -> None:
        try:
            self._context()
            req.tokens = req.tokenize(self._load())
            self.stats.requests += 1
        except BaseException as e:  # a bad prompt fails its request, not the engine
            self._finish_request(req, e)

    def _take(self) -> list[tuple[_Request, list[int], int]]:
        """Requests (or parts of requests) whose worst case fits in the free sequences and
        KV cells, first come first served: a group reserves its prompt's cells once (its
        sequences share them) and ``limit`` cells per sample. When few are free, a
        request's samples start in several groups."""
        out: list[tuple[_Request, list[int], int]] = []
        free = len(self._free)
        while self._queue and free:
            req = self._queue[0]
            if req.cancel.is_set() or req.finished:
                self._queue.popleft()
                if not req.finished:
                    req.finished = True
                    req.done(None, _Cancelled())
                continue
            if req.tokens is None:
                break  # arrived after this round's tokenizing: next round
            prompt = len(req.tokens)
            limit = min(req.sampling.max_tokens, self.n_ctx - prompt)
            fits = (self._cells_free - prompt) // limit if self._cells_free > prompt else 0
            k = min(free, len(req.pending), fits)
            if k < 1:
                break  # the head waits for cells; nothing overtakes it
            out.append((req, [req.pending.popleft() for _ in range(k)], limit))
            self._cells_free -= prompt + k * limit
            free -= k
            if not req.pending:
                self._queue.popleft()
        return out

    def _admit(self, req: _Request, indices: list[int], limit: int) -> None:
        """Evaluate the prompt once into one sequence, share its cells with the group's
        other sequences, and draw every sequence's first token from its last logits."""
        import llama_cpp

        assert self._ctx is not None
        assert req.tokens is not None
        ctx, model, tokens = self._ctx, self._load(), req.tokens
        ids = [self._free.pop() for _ in indices]
        first = ids[0]
        mem = ctx.memory
        llama_cpp.llama_memory_seq_rm(mem, first, -1, -1)
        shared = self._share_prefix(tokens, first)
        logits_at = self._prefill(tokens, first, shared)
        if logits_at < 0:
            self._free.extend(ids)
            self._cells_free += len(tokens) + len(ids) * limit
            llama_cpp.llama_memory_seq_rm(mem, first, -1, -1)
            self._finish_request(req, RuntimeError("llama_decode failed on the prompt"))
            return
        self.stats.prompt_tokens_evaluated += len(tokens) - shared
        self.stats.prefix_tokens_shared += shared
        group = _Group(len(tokens), tokens, list(ids))
        s = req.sampling
        hold = max((len(x) for x in s.stop), default=1) - 1
        new: list[_Seq] = []
        for seq_id, index in zip(ids, indices, strict=True):
            if seq_id != first:  # the same cells, one more owner: no copy, no compute
                llama_cpp.llama_memory_seq_rm(mem, seq_id, -1, -1)
                llama_cpp.llama_memory_seq_cp(mem, first, seq_id, -1, -1)
                self.stats.prompt_tokens_reused += len(tokens)
            sampler = self._sampler(s, req.seeds[index], model)
            new.append(_Seq(seq_id, req, index, sampler, group, len(tokens) - 1, limit, hold))
            req.running += 1
        for seq in new:
            tok = llama_cpp.llama_sampler_sample(seq.sampler, ctx.ctx, logits_at)
            self._active.append(seq)
            self._advance(seq, tok)
        self.stats.peak_sequences = max(self.stats.peak_sequences, len(self._active))

    def _share_prefix(self, tokens: list[int], seq_id: int) -> int:
        """Give ``seq_id`` the cells of the longest prompt prefix a running group already
        evaluated (a system prompt, a shared instruction: Hydragen's shared prefixes), so
        that only the rest is evaluated; returns its length (0: none worth sharing). The
        group's cells stay counted against the group that made them, and this request
        still reserves its whole prompt, so the cell accounting only over-counts."""
        import llama_cpp

        assert self._ctx is not None
        best, source = 0, -1
        for group in {id(q.group): q.group for q in self._active}.values():
            n = 0
            for a, b in zip(group.tokens, tokens, strict=False):
                if a != b:
                    break
                n += 1
            n = min(n, len(tokens) - 1)  # the last token is evaluated: its logits are needed
            if n > best:
                best, source = n, group.seqs[0]
        if best < _MIN_SHARED_PREFIX:
            return 0
        llama_cpp.llama_memory_seq_cp(self._ctx.memory, source, seq_id, 0, best)
        return best

    def _prefill(self, tokens: list[int], seq_id: int, skip: int = 0) -> int:
        """Evaluate ``tokens[skip:]`` (the cells of the first ``skip`` are the sequence's
        already) into ``seq_id`` in chunks; the batch index of the last token's logits, or
        -1 if llama.cpp failed."""
        import llama_cpp

        assert self._ctx is not None
        b = self._batch
        idx = -1
        for start in range(skip, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            b.n_tokens = len(chunk)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq_id
                b.logits[i] = False
            b.logits[len(chunk) - 1] = True
            if llama_cpp.llama_decode(self._ctx.ctx, b) != 0:
                return -1
            idx = len(chunk) - 1
        return idx

    def _sampler(self, s: Sampling, seed: int, model: LlamaModel) -> Any:
        """The sampler chain of one sequence, in llama-cpp-python's order."""
        import llama_cpp

        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if s.repeat_penalty != 1.0:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(_PENALTY_LAST_N, s.repeat_penalty, 0.0, 0.0),
            )
        if s.grammar is not None:
            add(
                chain,
                llama_cpp.llama_sampler_init_grammar(model.vocab, s.grammar.encode(), b"root"),
            )
        if s.temperature == 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
            add(chain, llama_cpp.llama_sampler_init_dist(seed % 2**32))
        return chain

    def _step(self) -> None:
        """One token for every active sequence, in one ``llama_decode``."""
        import llama_cpp

        assert self._ctx is not None
        b = self._batch
        seqs = list(self._active)
        b.n_tokens = len(seqs)
        for i, seq in enumerate(seqs):
            b.token[i] = seq.last
            b.pos[i] = seq.pos  # advanced when the token was sampled
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq.seq_id
            b.logits[i] = True
        rc = llama_cpp.llama_decode(self._ctx.ctx, b)
        if rc != 0:
            error = RuntimeError(f"llama_decode returned {rc} for a batch of {len(seqs)} sequences")
            for req in {seq.req: None for seq in seqs}:
                self._finish_request(req, error)
            return
        self.stats.decode_steps += 1
        self.stats.batched_tokens += len(seqs)
        for i, seq in enumerate(seqs):
            if seq.req.finished:
                continue
            self._advance(seq, llama_cpp.llama_sampler_sample(seq.sampler, self._ctx.ctx, i))

    def _advance(self, seq: _Seq, tok: int) -> None:
        """Take one sampled token: end the sample (end of generation, a stop string, the
        token limit) or queue the token for the next step."""
        req = seq.req
        s = req.sampling
        if tok in self._eog:
            self._done(seq, "stop")
            return
        assert self._model is not None
        seq.out += 1
        seq.raw += self._model.detokenize([tok])
        text = seq.raw.decode(errors="ignore")
        cut = _first_stop(text, s.stop) if s.stop else None
        if cut is not None:
            self._done(seq, "stop", text[:cut])
            return
        if req.on_text is not None and len(text) - seq.hold > seq.sent:
            req.on_text(seq.index, text[seq.sent : len(text) - seq.hold])
            seq.sent = len(text) - seq.hold
        if seq.out >= seq.limit:
            self._done(seq, "length")
            return
        seq.last = tok
        seq.pos += 1

    def _done(self, seq: _Seq, finish: FinishReason, text: str | None = None) -> None:
        req = seq.req
        if text is None:
            text = seq.raw.decode(errors="replace")
        if req.on_text is not None and len(text) > seq.sent:
            req.on_text(seq.index, text[seq.sent :])
        self.stats.generated_tokens += seq.out
        self.stats.samples += 1
        req.results[seq.index] = SampleOut(text, seq.out, finish)
        self._end(seq)
        if len(req.results) == len(req.seeds):
            req.finished = True
            req.done([req.results[i] for i in range(len(req.seeds))], None)

    def _end(self, seq: _Seq) -> None:
        import llama_cpp

        assert self._ctx is not None
        if seq.ended:
            return
        seq.ended = True
        if seq in self._active:
            self._active.remove(seq)
        llama_cpp.llama_memory_seq_rm(self._ctx.memory, seq.seq_id, -1, -1)
        llama_cpp.llama_sampler_free(seq.sampler)
        self._free.append(seq.seq_id)
        self._cells_free += seq.limit
        seq.group.seqs.remove(seq.seq_id)
        if not seq.group.seqs:  # the last owner of the prompt's cells
            self._cells_free += seq.group.prompt
        seq.req.running -= 1

    def _drop_cancelled(self) -> None:
        for seq in [q for q in self._active if q.req.cancel.is_set() or q.req.finished]:
            req = seq.req
            self._end(seq)
            if not req.finished:
                req.finished = True
                self.stats.cancelled += 1
                req.done(None, _Cancelled())
        with self._cond:
            for req in [r for r in self._queue if r.cancel.is_set()]:
                self._queue.remove(req)
                if not req.finished:
                    req.finished = True
                    if req.results or req.running:
                        self.stats.cancelled += 1
                    req.done(None, _Cancelled())

    def _finish_request(self, req: _Request, error: BaseException) -> None:
        for seq in [q for q in self._active if q.req is req]:
            self._end(seq)
        with self._cond:
            if req in self._queue:
                self._queue.remove(req)
        if not req.finished:
            req.finished = True
            req.done(None, error)

    def _idle(self) -> None:
        """Nothing runs: clear the KV cache, so the next request starts from a known state."""
        import llama_cpp

        if self._ctx is not None:
            llama_cpp.llama_memory_clear(self._ctx.memory, False)

    def _fail_all(self, error: BaseException) -> None:
        for seq in list(self._active):
            self._finish_request(seq.req, error)
        while self._queue:
            req = self._queue.popleft()
            if not req.finished:
                req.finished = True
                req.done(None, error)


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    best: int | None = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best):
            best = i
    return best
