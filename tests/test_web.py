"""The web chat page, end to end in headless Debian chromium driven by Playwright (the
browser comes from apt, never downloaded): send a message, see the answer stream in and
the pipeline panel fill, take a screenshot."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright
from test_serve import KEY, question, served, standin_url  # noqa: F401 - fixtures

from ponder.apps.server import PonderServer

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("Debian chromium is not installed: apt-get install chromium (./dev test does)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        await b.close()


async def test_chat_page_streams_an_answer_and_shows_the_pipeline(
    served: tuple[str, PonderServer],  # noqa: F811
    browser: Browser,
    tmp_path: Path,
) -> None:
    base, _ = served
    page = await browser.new_page(viewport={"width": 1280, "height": 760})
    await page.goto(base + "/")
    await page.fill("#api-key", KEY)
    await page.dispatch_event("#api-key", "change")
    await page.wait_for_function("document.querySelectorAll('#model option').length === 2")
    await page.select_option("#model", "vote")
    q = question(7)
    await page.fill("#input", q)
    await page.press("#input", "Enter")
    done = page.locator('.msg.assistant[data-done="1"]')
    await done.wait_for(timeout=30_000)
    answer = await done.inner_text()
    assert "\\boxed{" in answer
    assert await page.locator("#nodes .node.done").count() == 2
    summary = await page.inner_text("#summary")
    assert summary.startswith("Finished: answer ")
    cands = await page.locator("#nodes .node .cand").count()
    assert cands >= 6  # one summary line + five candidates of the generate layer
    # the thread is kept: the user message and the answer, titled by the question
    assert await page.locator(".msg.user").inner_text() == q
    assert (await page.locator("#threads .thread.active").inner_text()).startswith("Problem")
    shot = tmp_path / "web-chat.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("PONDER_UPDATE_SCREENSHOT"):
        shutil.copy(shot, Path(__file__).parent.parent / "docs" / "web-chat.png")


async def test_chat_page_shows_a_clear_error_without_a_key(
    served: tuple[str, PonderServer],  # noqa: F811
    browser: Browser,
) -> None:
    base, _ = served
    page = await browser.new_page()
    await page.goto(base + "/")
    await page.evaluate(
        "() => { const o = document.createElement('option'); o.value = 'vote';"
        " document.getElementById('model').appendChild(o); }"
    )
    await page.fill("#input", "hello")
    await page.press("#input", "Enter")
    err = page.locator(".msg.error")
    await err.wait_for(timeout=10_000)
    assert "missing API key" in await err.inner_text()
