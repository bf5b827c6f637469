"""Ranking with a reward model behind an endpoint (``reward_rank``).

A reward model gives each candidate a score for the query; the candidates are ordered by it
and the best ``top_k`` kept. This is the contract of Archon's PairRM ranker
(``"model": "llm-blender/PairRM"``): the query and the candidates in, a score per candidate
out, ranked in batches of ``batch_size`` (Archon's ``ranker_batch_size``).

The reward model is a model like any other (:meth:`ponder.Model.score`, vLLM's score API):
a workflow's engine builds it from ``url`` and ``reward_model``, so its calls share the
endpoint's limits, reserve on the run's budget, are retried, cached and traced::

    POST {url}/score  {"model": M, "text_1": QUERY, "text_2": [CANDIDATE, ...]}
    -> {"data": [{"index": 0, "score": 0.93}, ...]}

The stand-in server answers it too (its oracle scores right answers higher).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, SecretStr, field_validator

from ponder._internal.env import expand_env
from ponder.agents._base import _Config, register_component
from ponder.agents._state import Candidate, Pool
from ponder.backends import ModelRef
from ponder.settings import Settings

if TYPE_CHECKING:
    from ponder.backends import Model
    from ponder.engine import Engine

__all__ = ["RewardRankConfig", "RewardRanker"]


class RewardRankConfig(_Config):
    url: str = Field(
        description="Base URL of the reward model's server (vLLM style, e.g. "
        "http://127.0.0.1:8000/v1); '${VAR}' and '${VAR:-default}' read the environment."
    )
    reward_model: str = Field("llm-blender/PairRM", description="The reward model's name there.")
    top_k: int | None = Field(None, ge=1, description="Keep only the best k.")
    batch_size: int = Field(16, ge=1, description="Candidates scored per request.")
    api_key_env: str | None = Field(None, description="Environment variable with a key.")
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    attempts: int = Field(3, ge=1, description="Tries per batch on 5xx or connection faults.")
    score_name: str = "reward"

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://", "${")):
            raise ValueError(f"reward model url must be http(s)://..., got {v!r}")
        return v


def reward_model_ref(config: RewardRankConfig, settings: Settings) -> ModelRef:
    """The reward model of ``config`` as a model reference (``vllm:NAME@URL``, its key
    read through ``settings`` from ``api_key_env``)."""
    key = settings.env_key(config.api_key_env) if config.api_key_env else None
    return ModelRef(
        provider="vllm",
        name=config.reward_model,
        base_urls=(expand_env(config.url).rstrip("/"),),
        api_key=SecretStr(key) if key else None,
    )


def _build(
    config: RewardRankConfig, models: list[Model], prm: object, engine: Engine
) -> RewardRanker:
    # the reward model is the engine's: its endpoint, limits and cache are shared
    return RewardRanker(config, engine.model(reward_model_ref(config, engine.settings)))


@register_component(config=RewardRankConfig, models="none", build=_build, with_engine=True)
class RewardRanker:
    """Order candidates by a reward model's score and keep the top k.

    Sets ``scores[score_name]`` to the reward and ``scores['rank']`` as the ``rank``
    component does (1.0 for the best, falling linearly). A request refused (4xx) or an
    answer that does not parse is an error naming the server; 5xx and connection faults
    are retried (``attempts`` tries in all).

    ``model`` is the reward model as a workflow's engine builds it; without one (the
    component made by hand), the running loop's engine builds it on first use.
    """

    name: ClassVar[str] = "reward_rank"

    def __init__(self, config: RewardRankConfig, model: Model | None = None) -> None:
        self.config = config
        self._model = self._with_attempts(model) if model is not None else None

    def _with_attempts(self, model: Model) -> Model:
        return model.with_retry(
            model.retry.model_copy(update={"max_retries": self.config.attempts - 1})
        )

    def _reward_model(self) -> Model:
        if self._model is None:
            from ponder.engine import engine_for

            engine = engine_for()
            self._model = self._with_attempts(
                engine.model(reward_model_ref(self.config, engine.settings))
            )
        return self._model

    async def __call__(self, pool: Pool) -> Pool:
        cands = list(pool.candidates)
        if len(cands) <= 1:
            return pool
        cfg = self.config
        model = self._reward_model()
        size = cfg.batch_size
        batches = [cands[i : i + size] for i in range(0, len(cands), size)]
        scores = await asyncio.gather(
            *(
                model.score(pool.query, [c.text for c in b], request_timeout=cfg.timeout)
                for b in batches
            )
        )
        flat = [s for batch in scores for s in batch]
        order = sorted(range(len(cands)), key=lambda i: -flat[i])
        n = len(order)
        ranked: list[Candidate] = [
            cands[i].scored(cfg.score_name, flat[i]).scored("rank", 1.0 - pos / n)
            for pos, i in enumerate(order)
        ]
        if cfg.top_k is not None:
            ranked = ranked[: cfg.top_k]
        return pool.with_candidates(ranked)
