"""The chat page in a real browser: Debian's Chromium driven by Playwright (no browser download).

Against the real server on port 0 in this process: the page connects, the test types a
message and sees the reply, the status indicator changes, quick actions work and video
frames advance on the canvas. A screenshot is saved under test-artifacts/ (and copied to
docs/images/chat_page.png for the README). Skipped, not failed, where /usr/bin/chromium
is absent.
"""

import asyncio
import shutil
from pathlib import Path

import pytest

from paths import REPO
from server_harness import make_service, running, warm_up_interpreter

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
README_IMAGE = REPO / "docs" / "images" / "chat_page.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module", autouse=True)
def _warm():
    warm_up_interpreter()


@pytest.fixture
def service():
    service = make_service(resume_grace_s=5.0)
    yield service
    service.pool.shutdown(wait=True)


async def _frame_index(page) -> int:
    value = await page.locator("#video").get_attribute("data-frame-index", timeout=5000)
    return int(value) if value is not None else -1


async def _wait_frame_after(page, index: int, timeout: float = 10.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        current = await _frame_index(page)
        if current > index:
            return current
        await asyncio.sleep(0.1)
    raise AssertionError(f"video did not advance past frame {index}")


async def test_chat_page_chats_shows_status_and_streams_video(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True,
            viewport={"width": 1100, "height": 720},
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            console_errors = []
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            await page.goto(server.http_url + "/", timeout=20000)
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            await expect(page.locator("#persona-name")).to_have_text("Mira")
            first = await _wait_frame_after(page, -1)
            second = await _wait_frame_after(page, first)
            assert second > first

            await page.fill("#message", "please wave at me")
            await page.press("#message", "Enter")
            reply = page.locator("li.persona[data-done='true']").last
            await expect(reply).to_be_visible(timeout=20000)
            assert "wave" in (await reply.get_attribute("data-directives"))
            assert (await reply.inner_text()).strip()
            await expect(page.locator("#status-action")).to_have_text("wave", timeout=10000)
            await expect(page.locator("#status-expression")).not_to_have_text("neutral", timeout=5000)

            await page.click("#quick-actions button[data-action='sit']")
            await expect(page.locator("#status-pose")).to_have_text("sitting", timeout=10000)
            later = await _wait_frame_after(page, second)
            await expect(page.locator("#metrics")).to_contain_text("fps", timeout=5000)

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "chat_page.png"
            await page.screenshot(path=str(shot))
            README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, README_IMAGE)

            # Reconnect with session resume: a reload keeps the same session (sessionStorage).
            session = await page.evaluate("window.sessionStorage.getItem('persona.session')")
            await page.reload()
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            assert await page.evaluate("window.personaClient.ready.resumed") is True
            assert await page.evaluate("window.personaClient.ready.session") == session
            await _wait_frame_after(page, -1)
            assert later > second and not console_errors, console_errors
        finally:
            await browser.close()


async def test_chat_page_shows_errors_clearly(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True
        )
        try:
            page = browser.pages[0] if browser.pages else await browser.new_page()
            await page.goto(server.http_url + "/?persona=nobody", timeout=20000)
            await expect(page.locator("#errors")).to_contain_text("unknown_persona", timeout=20000)
            # The client falls back to the server's default persona and carries on.
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
        finally:
            await browser.close()
