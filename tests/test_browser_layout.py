"""The chat page's layout and accessibility in a real browser (Debian's Chromium, Playwright).

At a phone's viewport (390×844) and a desktop's (1920×1080), after enough messages to
overflow the history, the message box and the character's video are both wholly in view
(the history scrolls, not the page). axe-core (the npm package `scripts/setup.sh test`
installs into .venv/node) finds no serious or critical violation on the page. Screenshots
go to test-artifacts/ (and docs/images/ with PERSONA_UPDATE_DOC_IMAGES=1, for the README).
"""

from pathlib import Path

import pytest
from test_browser_chat import ARGS, ARTIFACTS, CHROMIUM, _wait_frame_after

from paths import REPO, publish_doc_image
from server_harness import running, service_fixtures

AXE = REPO / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

service, _warm = service_fixtures(resume_grace_s=5.0)


async def _open(pw, tmp_path: Path, server, width: int, height: int):
    from playwright.async_api import expect

    browser = await pw.chromium.launch_persistent_context(
        str(tmp_path / f"profile-{width}"), executable_path=str(CHROMIUM), args=ARGS, headless=True,
        viewport={"width": width, "height": height},
    )
    page = browser.pages[0] if browser.pages else await browser.new_page()
    await page.goto(server.http_url + "/?media=websocket", timeout=20000)  # the JPEG canvas; WebRTC: test_webrtc_browser.py
    await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
    return browser, page


async def _wholly_in_view(page, selector: str, width: int, height: int) -> dict:
    box = await page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not rendered"
    inside = (box["x"] >= -0.5 and box["y"] >= -0.5 and box["x"] + box["width"] <= width + 0.5
              and box["y"] + box["height"] <= height + 0.5)
    assert inside, f"{selector} at {box} is not wholly inside the {width}x{height} viewport"
    return box


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1920, 1080)], ids=["phone", "desktop"])
async def test_message_box_and_character_stay_in_view(service, tmp_path, width, height):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        browser, page = await _open(pw, tmp_path, server, width, height)
        try:
            await _wait_frame_after(page, -1)
            for text in ("hello there", "please wave at me", "can you smile", "tell me about yourself",
                         "what do you like", "sit down please"):
                done = page.locator("li.persona[data-done='true']")
                before = await done.count()
                await page.fill("#message", text)
                await page.press("#message", "Enter")
                await expect(done).to_have_count(before + 1, timeout=20000)
            await page.focus("#message")  # where a user's attention is after sending
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"chat_page-{width}x{height}.png"
            await page.screenshot(path=str(shot))
            message = await _wholly_in_view(page, "#message", width, height)
            video = await _wholly_in_view(page, "#video", width, height)
            # The character is a picture one can see, not a thumbnail.
            assert video["width"] >= 0.5 * min(width, 720) and video["height"] >= 0.2 * height, video
            assert message["height"] >= 24, message
            publish_doc_image(shot, f"chat_page-{width}x{height}.png")
        finally:
            await browser.close()


@pytest.mark.skipif(not AXE.is_file(), reason="axe-core is not installed (npm; scripts/setup.sh test)")
async def test_the_page_has_no_serious_accessibility_violation(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        browser, page = await _open(pw, tmp_path, server, 1280, 800)
        try:
            await page.fill("#message", "please wave at me")
            await page.press("#message", "Enter")
            await expect(page.locator("li.persona[data-done='true']").last).to_be_visible(timeout=20000)
            # Through the DevTools protocol: the page's CSP allows no injected <script>.
            await page.evaluate(AXE.read_text(encoding="utf-8"))
            violations = await page.evaluate(
                """async () => {
                    const result = await axe.run(document, {resultTypes: ['violations']});
                    return result.violations.map(v => ({id: v.id, impact: v.impact,
                        nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
                }"""
            )
            serious = [v for v in violations if v["impact"] in ("serious", "critical")]
            assert not serious, serious
        finally:
            await browser.close()
