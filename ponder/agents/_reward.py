"""Ranking with a reward model behind an endpoint (``reward_rank``).

A reward model gives each candidate a score for the query; the candidates are ordered by it
and the best ``top_k`` kept. This is the contract of Archon's PairRM ranker
(``"model": "llm-blender/PairRM"``): the query and the candidates in, a score per candidate
out, ranked in batches of ``batch_size`` (Archon's ``ranker_batch_size``).

The wire is vLLM's score API, which serves reward and cross-encoder models::

    POST {url}/score  {"model": M, "text_1": QUERY, "text_2": [CANDIDATE, ...]}
    -> {"data": [{"index": 0, "score": 0.93}, ...]}

The stand-in server answers it too (its oracle scores right answers higher).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from pydantic import Field, field_validator
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ponder.agents._base import _Config, register_component
from ponder.agents._state import Candidate, Pool
from ponder.errors import BadRequestError, ParseError, ServerError, TransportError

if TYPE_CHECKING:
    import aiohttp

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


def _expand(value: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` from the environment."""

    def sub(m: re.Match[str]) -> str:
        name, _, default = m.group(1).partition(":-")
        return os.environ.get(name, default)

    return re.sub(r"\$\{([^}]+)\}", sub, value)


@register_component(config=RewardRankConfig, models="none")
class RewardRanker:
    """Order candidates by a reward model's score and keep the top k.

    Sets ``scores[score_name]`` to the reward and ``scores['rank']`` as the ``rank``
    component does (1.0 for the best, falling linearly). A request refused (4xx) or an answer that
    does not parse is an error naming the server; 5xx and connection faults are retried.
    """

    name: ClassVar[str] = "reward_rank"

    def __init__(self, config: RewardRankConfig) -> None:
        self.config = config

    async def _score(self, session: aiohttp.ClientSession, url: str, query: str,
                     texts: list[str]) -> list[float]:  # fmt: skip
        import aiohttp

        cfg = self.config
        body = {"model": cfg.reward_model, "text_1": query, "text_2": texts}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(cfg.attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type((ServerError, TransportError)),
            reraise=True,
        ):
            with attempt:
                try:
                    async with session.post(
                        f"{url}/score", data=orjson.dumps(body), headers=headers
                    ) as r:
                        raw = await r.read()
                        status = r.status
                except (TimeoutError, aiohttp.ClientError) as e:
                    raise TransportError(
                        f"reward model at {url}: {type(e).__name__}: {e}. Is it running?",
                        endpoint=url,
                    ) from None
                if status >= 500:
                    raise ServerError(f"reward model at {url}: HTTP {status}", status=status,
                                      endpoint=url)  # fmt: skip
                if status >= 400:
                    raise BadRequestError(
                        f"reward model at {url} refused the request (HTTP {status}): "
                        f"{raw[:300].decode(errors='replace')}",
                        status=status,
                        endpoint=url,
                    )
        return _parse_scores(raw, len(texts), url)

    async def __call__(self, pool: Pool) -> Pool:
        cands = list(pool.candidates)
        if len(cands) <= 1:
            return pool
        cfg = self.config
        url = _expand(cfg.url).rstrip("/")
        size = cfg.batch_size
        batches = [cands[i : i + size] for i in range(0, len(cands), size)]
        import aiohttp  # loaded on first use: importing ponder.agents stays light

        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            scores = await asyncio.gather(
                *(self._score(session, url, pool.query, [c.text for c in b]) for b in batches)
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


def _parse_scores(raw: bytes, count: int, url: str) -> list[float]:
    try:
        data: Any = orjson.loads(raw)
        items = data["data"]
        out = [0.0] * count
        seen = set()
        for item in items:
            i = int(item["index"])
            out[i] = float(item["score"])
            seen.add(i)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise ParseError(
            f"reward model at {url} answered something other than vLLM's score format "
            f"({type(e).__name__}): {raw[:200].decode(errors='replace')}"
        ) from None
    if len(seen) != count:
        raise ParseError(f"reward model at {url} scored {len(seen)} of {count} candidates")
    return out
