"""Anthropic on AWS Bedrock (``bedrock:MODEL``) through the anthropic SDK's Bedrock client,
against a local server that speaks Bedrock's invoke API and checks the SigV4 signature's
shape (credentials, region, service)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from conftest import Route

from ponder import BadRequestError, Model, Settings
from ponder.backends._anthropic import _bedrock_region
from ponder.backends._providers import BEDROCK_URL

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDPONDERTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)


@pytest_asyncio.fixture
async def bedrock(
    loopback_server: Callable[[list[Route]], Awaitable[str]],
) -> tuple[str, list[dict[str, Any]]]:
    """A local server speaking Bedrock's invoke API; what it received is kept."""
    seen: list[dict[str, Any]] = []

    async def invoke(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(
            {
                "model": request.match_info["model"],
                "auth": request.headers.get("Authorization", ""),
                "body": body,
            }
        )
        if body["messages"][0]["content"] == "refuse me":
            return web.json_response({"message": "Malformed input request"}, status=400)
        text = "Thinking. \\boxed{428}"
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": request.match_info["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 7},
            }
        )

    url = await loopback_server([("POST", "/model/{model}/invoke", invoke)])
    return url, seen


async def test_bedrock_signs_and_speaks_anthropic_messages(
    bedrock: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = bedrock
    async with Model(f"bedrock:{MODEL}@{url}", settings=Settings.load(cache=False)) as m:
        out = await m.generate(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "53*7+57?"}],
            max_tokens=50,
            temperature=0.2,
        )
    assert out.text == "Thinking. \\boxed{428}"
    assert out.usage.prompt_tokens == 12
    assert out.usage.completion_tokens == 7
    (call,) = seen
    assert call["model"] == MODEL
    assert call["auth"].startswith("AWS4-HMAC-SHA256 Credential=AKIDPONDERTEST/")
    assert "/us-west-2/bedrock/aws4_request" in call["auth"]
    body = call["body"]
    assert body["anthropic_version"]  # Bedrock takes the API version in the body
    assert "model" not in body  # Bedrock takes it from the path
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 50


async def test_a_refused_bedrock_request_is_a_clear_error_and_not_retried(
    bedrock: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = bedrock
    async with Model(f"bedrock:{MODEL}@{url}", settings=Settings.load(cache=False)) as m:
        with pytest.raises(BadRequestError, match="Malformed input request"):
            await m.generate("refuse me", max_tokens=5)
    assert len(seen) == 1


def test_bedrock_region_comes_from_the_environment_or_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _bedrock_region(BEDROCK_URL) == ("us-west-2", None)  # AWS_REGION moves it
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert _bedrock_region(BEDROCK_URL) == ("us-east-1", None)
    url = "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert _bedrock_region(url) == ("eu-central-1", url)
    assert (
        json.dumps(_bedrock_region("http://127.0.0.1:9")) == '["us-east-1", "http://127.0.0.1:9"]'
    )
