"""What every component shares: the registry (``register_component``, the built-ins'
modules, look-up that imports only the module a name needs), the config base class, and
the helpers that turn a step's settings into model calls and provenance."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    Protocol,
    TypeVar,
    cast,
    get_args,
    overload,
    runtime_checkable,
)

from pydantic import BaseModel, ConfigDict, Field

from ponder.agents._state import Candidate, Pool, Provenance, Spend
from ponder.errors import ConfigurationError
from ponder.types import Completion, GenerateParams, Message

if TYPE_CHECKING:  # at run time components only call the models they are given
    from ponder.backends import Model
    from ponder.engine import Engine


__all__ = [
    "COMPONENTS",
    "Component",
    "ComponentInfo",
    "ModelStep",
    "find_component",
    "get_component",
    "load_components",
    "register_component",
    "unregister_component",
]

T = TypeVar("T")


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    slot: str | None = Field(
        None,
        description="Where the component sits in a workflow (node.position; set by the "
        "workflow). Ids of the candidates it makes start with it, so two slots that call "
        "one model keep their candidates apart.",
    )


def _origin(name: str, cfg: _Config, model: str, layer: int | None = None) -> str:
    """The prefix of a component's candidate ids: its slot where it has one."""
    if cfg.slot is not None:
        return f"{cfg.slot}:{model}:"
    return f"{name}:{model}:" if layer is None else f"{name}:{model}:{layer}:"


@runtime_checkable
class Component(Protocol):
    """``await component(pool)`` returns a new pool; the input pool is never changed.

    A component keeps only its configuration and the models it was given: it is
    stateless between calls and reentrant, so one instance serves every concurrent run.
    Per-call data travels in the pool. Model output that does not parse marks the
    candidate (``error``) or the pool (``notes``); it never ends the run."""

    name: ClassVar[str]

    async def __call__(self, pool: Pool) -> Pool: ...


C = TypeVar("C", bound=BaseModel)


class ModelStep(Generic[C]):
    """The base of a component that calls one model: ``Step(model, config=None)``.

    The config class is the subscript (``class Critic(ModelStep[JudgeConfig])``), and no
    config means its defaults. Subclasses add only what they do::

        class Shorten(ModelStep[ShortenConfig]):
            name: ClassVar[str] = "shorten"

            async def __call__(self, pool: Pool) -> Pool: ...  # self.model, self.config
    """

    config_type: ClassVar[type[BaseModel]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            for arg in get_args(base):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    cls.config_type = arg
                    # help() and signature() name the config class, not ``C``
                    sig = inspect.signature(cls.__init__)
                    params = [
                        q.replace(annotation=f"{arg.__name__} | None") if q.name == "config" else q
                        for q in list(sig.parameters.values())[1:]
                    ]
                    setattr(cls, "__signature__", sig.replace(parameters=params))  # noqa: B010

    def __init__(self, model: Model, config: C | None = None) -> None:
        kind = getattr(type(self), "config_type", None)
        if kind is None:
            name = type(self).__name__
            raise ConfigurationError(
                f"{name} does not say its config class: write class {name}(ModelStep[ItsConfig])"
            )
        if config is not None and not isinstance(config, kind):
            raise ConfigurationError(
                f"{type(self).__name__} takes a {kind.__name__}, got a {type(config).__name__}"
            )
        self.model = model
        self.config: C = config if config is not None else cast(C, kind())


Arity = Literal["none", "one", "many"]
Builder = Callable[[Any, "list[Model]", "Model | None"], Any]
EngineBuilder = Callable[[Any, "list[Model]", "Model | None", "Engine"], Any]


@dataclass(frozen=True)
class ComponentInfo:
    """What a workflow needs to know to build a registered component from YAML: its config
    class, how many models it takes, whether it takes a step scorer (``prm_model``) and
    how to build it (``with_engine``: the builder also gets the workflow's engine, which
    builds what the component's config names itself, such as a reward model at a URL or
    a memory store, once per engine)."""

    name: str
    cls: type[Any]
    config: type[BaseModel] | None
    models: Arity
    prm: bool
    build: Builder | EngineBuilder
    with_engine: bool = False

    @property
    def needs_model(self) -> bool:
        return self.models != "none"


COMPONENTS: dict[str, ComponentInfo] = {}
"""The one component registry: name -> :class:`ComponentInfo` (YAML reads it).

Built-in components register when their module is first imported; ``ponder.agents.COMPONENTS``
and :func:`load_components` import them all, :func:`get_component` just the one it needs."""

# where each built-in component is defined (tests/test_agents.py keeps this true)
BUILTIN_MODULES: dict[str, str] = {
    **dict.fromkeys(("adaptive_vote", "generate", "vote"), "ponder.agents._components"),
    **dict.fromkeys(("check", "critique", "fuse", "rank", "verify"), "ponder.agents._judges"),
    **dict.fromkeys(("best_of_n", "refine"), "ponder.agents._refine"),
    "agent": "ponder.agents._agent",
    **dict.fromkeys(("beam_search", "first_finish", "mcts", "particle_filter"),
                    "ponder.agents._search"),
    **dict.fromkeys(("cascade", "confidence_vote", "early_rejection", "speculative_reasoning"),
                    "ponder.agents._adaptive"),
    **dict.fromkeys(("execution_vote", "judge_tests", "run_tests", "write_tests"),
                    "ponder.agents._code"),
    "program": "ponder.agents._program",
    "reward_rank": "ponder.agents._reward",
}  # fmt: skip


def load_components() -> dict[str, ComponentInfo]:
    """Import every built-in component's module; the full registry."""
    for module in sorted(set(BUILTIN_MODULES.values())):
        importlib.import_module(module)
    return COMPONENTS


def find_component(name: str) -> ComponentInfo | None:
    """The registry entry of ``name``, importing only its built-in module; None if unknown."""
    info = COMPONENTS.get(name)
    if info is None and name in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[name])
        info = COMPONENTS.get(name)
    return info


def _default_builder(cls: type[Any], models: Arity) -> Builder:
    def build(config: Any, ms: list[Model], _p: Model | None) -> Any:
        if models == "none":
            return cls(config)
        return cls(ms if models == "many" else ms[0], config)

    return build


@overload
def register_component(cls: type[T]) -> type[T]: ...
@overload
def register_component(
    *,
    config: type[BaseModel] | None = None,
    models: Arity = "one",
    prm: bool = False,
    build: Builder | EngineBuilder | None = None,
    with_engine: bool = False,
) -> Callable[[type[T]], type[T]]: ...
def register_component(
    cls: type[T] | None = None,
    *,
    config: type[BaseModel] | None = None,
    models: Arity = "one",
    prm: bool = False,
    build: Builder | EngineBuilder | None = None,
    with_engine: bool = False,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Class decorator: make a component addressable by its ``name`` (workflows, YAML).

    ``@register_component(config=MyConfig, models="one")`` declares what YAML needs:
    the config class its parameters validate against, how many models it takes
    (``none``, ``one``, ``many``), whether it takes a step scorer (``prm``), and
    optionally ``build(config, models, prm_model)`` (with ``with_engine=True``:
    ``build(config, models, prm_model, engine)``, for a component whose config names
    something the engine should build and own: ``engine.model(ref)``,
    ``engine.resource(key, make)``); by default it is built as
    ``cls(config)``, ``cls(model, config)`` or ``cls(models, config)`` (a component that
    takes a step scorer gives its own ``build``). A bare ``@register_component``
    registers a component for Python use only (YAML refuses it with a message).
    """

    def deco(c: type[T]) -> type[T]:
        name = getattr(c, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{c.__name__} needs a class attribute 'name'")
        old = COMPONENTS.get(name)
        if old is not None and old.cls is not c:
            raise ConfigurationError(f"a component named {name!r} is already registered")
        if with_engine and build is None:
            raise ConfigurationError(f"{c.__name__}: with_engine=True needs a build function")
        if prm and build is None:
            raise ConfigurationError(
                f"{c.__name__} takes a step scorer (prm=True): give build=(config, models, "
                "prm_model) -> component"
            )
        COMPONENTS[name] = ComponentInfo(
            name, c, config, models, prm, build or _default_builder(c, models), with_engine
        )
        return c

    return deco(cls) if cls is not None else deco


def unregister_component(name: str) -> None:
    """Remove a registered component (tests that register their own)."""
    COMPONENTS.pop(name, None)


def get_component(name: str) -> ComponentInfo:
    """The registry entry of ``name``; unknown names get a suggestion."""
    info = find_component(name)
    if info is None:
        raise ConfigurationError(unknown_component(name))
    return info


def unknown_component(name: str) -> str:
    """The message for an unknown component: the nearest name and every known one."""
    known = load_components()
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown component {name!r}{hint} (known: {', '.join(sorted(known))})"


def _spend(c: Completion) -> Spend:
    return Spend.of(c.usage, c.cost, c.requests, c.cached_usage, c.saved_cost)


def _listing(candidates: Sequence[Candidate]) -> str:
    return "\n\n".join(f"Candidate {i + 1}: {c.text.strip()}" for i, c in enumerate(candidates))


# memo kept: 1.06-1.08x per node without it (benchmarks/graph_overhead.py --memos)
@functools.lru_cache(maxsize=256)
def _messages(system: str | None, user: str) -> tuple[Message, ...]:
    """The prompt's messages; built once per prompt (they are frozen), since every sample
    and every round of a loop asks with the same ones."""
    return ((Message.system(system),) if system else ()) + (Message.user(user),)


LIVE_TEXT: ContextVar[Callable[[str], object] | None] = ContextVar("ponder_live_text", default=None)
"""(Private to Ponder.) Where the component being run sends its text as it is generated:
the workflow runner sets it, around the one step that writes a live run's answer, to the
run's own sink (``engine.Run(live=...)``); None: no live answer."""


async def _complete(model: Model, messages: tuple[Message, ...], **kw: Any) -> Completion:
    """``model.generate`` (one sample) as it is, or streamed to the live sink when this
    step writes the run's final answer live."""
    sink = LIVE_TEXT.get()
    if sink is not None and kw.get("n", 1) == 1:
        return await model.generate_streamed(messages, sink, **kw)
    return await model.generate(messages, **kw)


async def _ask(
    model: Model,
    cfg: Any,
    messages: Sequence[Message],
    *,
    n: int = 1,
    seed_offset: int = 0,
    live: bool = False,
) -> Completion:
    """One call with a component's sampling settings (its config's ``temperature``,
    ``max_tokens`` and ``seed``, the seed moved by ``seed_offset`` so that each item or
    round draws its own samples). ``live``: this step may write the run's answer, so its
    one sample streams to the live sink."""
    seed = None if cfg.seed is None else cfg.seed + seed_offset
    if live:
        return await _complete(
            model, tuple(messages), n=n, temperature=cfg.temperature,
            max_tokens=cfg.max_tokens, seed=seed,
        )  # fmt: skip
    return await model.generate(
        messages, n=n, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=seed
    )


# memo kept: 1.27-1.36x per node without it, since a new params object is also resolved
# again by the model (benchmarks/graph_overhead.py --memos)
@functools.lru_cache(maxsize=1024)
def _sampling(
    n: int, temperature: float | None, max_tokens: int | None, seed: int | None, logprobs: bool
) -> GenerateParams:
    """One params object per setting: the model layer resolves each object once."""
    return GenerateParams.build(
        n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=logprobs
    )


def _sample_provenance(
    component: str, model: Model, layer: int, seed: int | None, index: int
) -> Provenance:
    """Sample ``index`` of a step seeded ``seed`` (sample i uses seed + offset + i)."""
    s = None if seed is None else seed + model.offset + index
    return _provenance(component, model.id, layer, s, index)


def _provenance(
    component: str, model: str | None, layer: int, seed: int | None, index: int
) -> Provenance:
    """Sample ``index`` of a step's provenance (no memo: 1.00-1.08x per node without one,
    benchmarks/graph_overhead.py --memos)."""
    return Provenance(component=component, model=model, layer=layer, seed=seed, index=index)
