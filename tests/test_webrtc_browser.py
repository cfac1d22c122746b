"""The chat page over WebRTC in a real browser: Debian's Chromium (Playwright) against the real
server on port 0 in this process.

By default the page offers, the server answers, and the <video> element presents frames that
keep coming (counted with requestVideoFrameCallback) while the transport badge says WebRTC and
the canvas is hidden; a spoken reply arrives as audio energy on the inbound RTP stream. The
user's choice of the WebSocket closes the peer, brings the JPEG frames back to the canvas and
is kept across a reload, where the page never offers. A peer that never connects is given up
by the server; the page draws on the canvas meanwhile and offers again, and WebRTC comes back. With WebRTC off on the server, or a
browser without RTCPeerConnection, the same page stays on the WebSocket: the badge says so and
the canvas draws JPEG frames. Skipped, not failed, where /usr/bin/chromium is absent.
"""

from __future__ import annotations

import asyncio

import pytest
from test_browser_chat import AUDIO_ARGS, CHROMIUM

from server_harness import make_service, running, service_fixtures  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

ARGS = AUDIO_ARGS

service, _warm = service_fixtures(resume_grace_s=5.0)


async def _wait_js(page, expression: str, timeout: float = 20.0):
    """Poll until `expression` (awaited in the page) is truthy; its value. `page.evaluate` goes
    through DevTools, outside the page's CSP (no unsafe-eval for wait_for_function)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := await page.evaluate(expression)):
        if loop.time() > deadline:
            raise AssertionError(f"{expression} did not become true within {timeout} s")
        await asyncio.sleep(0.1)
    return value


async def _open(pw, tmp_path, url: str, init_script: str | None = None, console: list[str] | None = None):
    browser = await pw.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True,
        viewport={"width": 1100, "height": 720},
    )
    page = browser.pages[0] if browser.pages else await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if console is not None:
        page.on("console", lambda message: console.append(message.text))
    if init_script:
        await page.add_init_script(init_script)
    await page.goto(url, timeout=20000)
    return browser, page, errors


async def _canvas_frames_advance(page, by: int = 5) -> None:
    start = int(await _wait_js(page, "document.getElementById('video').dataset.frameIndex"))
    await _wait_js(page, f"Number(document.getElementById('video').dataset.frameIndex) > {start + by}")


async def test_the_page_plays_webrtc_video_and_hears_webrtc_speech_by_default(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        browser, page, errors = await _open(pw, tmp_path, server.http_url + "/?max_fps=10")
        try:
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            await expect(page.locator("#media")).to_have_value("webrtc")
            await expect(page.locator("#transport")).to_have_attribute("data-transport", "webrtc", timeout=30000)
            await expect(page.locator("#transport")).to_contain_text("WebRTC")
            await expect(page.locator("#rtc-video")).to_be_visible()
            await expect(page.locator("#video")).to_be_hidden()
            first = await _wait_js(page, "window.personaRtc.frames >= 3 && window.personaRtc.frames")
            await _wait_js(page, f"window.personaRtc.frames >= {first + 5}")
            size = await page.evaluate("[document.getElementById('rtc-video').videoWidth, "
                                       "document.getElementById('rtc-video').videoHeight]")
            assert size == [384, 384]
            await page.fill("#message", "hello! how are you today?")
            await page.press("#message", "Enter")
            energy = await _wait_js(page, "window.personaRtc.stats().then(s => s.audioEnergy > 0.01 && s.audioEnergy)")
            assert energy > 0.01
            stats = await page.evaluate("window.personaRtc.stats()")
            assert stats["transport"] == "webrtc" and stats["framesDecoded"] >= first + 5, stats
            assert len(service.webrtc.peers) == 1
            assert not errors, errors
        finally:
            await browser.close()


async def test_the_users_choice_of_the_websocket_closes_the_peer_and_is_kept(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        browser, page, errors = await _open(pw, tmp_path, server.http_url + "/?max_fps=10")
        try:
            await expect(page.locator("#transport")).to_have_attribute("data-transport", "webrtc", timeout=30000)
            await page.select_option("#media", "websocket")
            await expect(page.locator("#transport")).to_have_attribute("data-transport", "websocket", timeout=20000)
            await expect(page.locator("#transport")).to_have_text("WebSocket")
            await expect(page.locator("#video")).to_be_visible()
            await expect(page.locator("#rtc-video")).to_be_hidden()
            await _canvas_frames_advance(page)
            await _wait_js(page, "window.personaRtc.pc === null")
            assert await page.evaluate("localStorage.getItem('persona.chat.media')") == "websocket"

            # A new page load keeps the choice: a client that never offers.
            await page.reload()
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            await expect(page.locator("#media")).to_have_value("websocket")
            await _canvas_frames_advance(page)
            assert await page.evaluate("window.personaRtc.pc === null && window.personaRtc.offerId === null")
            await expect(page.locator("#transport")).to_have_attribute("data-transport", "websocket")
            assert not service.webrtc.peers
            assert not errors, errors
        finally:
            await browser.close()


#: The first answer never reaches the browser's peer (as on a network that drops the ICE
#: checks): that peer cannot connect. Later peers are left alone.
FIRST_PEER_NEVER_CONNECTS = """
const apply = RTCPeerConnection.prototype.setRemoteDescription;
let dropped = 0;
RTCPeerConnection.prototype.setRemoteDescription = function (description) {
  if (dropped++ === 0) return Promise.resolve();
  return apply.call(this, description);
};
"""


async def test_a_peer_that_never_connects_is_offered_again_and_webrtc_comes_back(tmp_path):
    from playwright.async_api import async_playwright, expect

    service = await asyncio.to_thread(make_service, webrtc_connect_timeout_s=2.0)
    try:
        async with running(service) as server, async_playwright() as pw:
            console: list[str] = []
            browser, page, errors = await _open(pw, tmp_path, server.http_url + "/?max_fps=10",
                                                init_script=FIRST_PEER_NEVER_CONNECTS, console=console)
            try:
                await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
                # The server gives up on the first peer (webrtc_failed): the canvas draws meanwhile.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while not any("stopped: webrtc_failed" in line for line in console):
                    assert loop.time() < deadline, f"the server never gave up on the first peer: {console}"
                    await asyncio.sleep(0.1)
                await expect(page.locator("#transport")).to_have_attribute("data-transport", "websocket")
                await _canvas_frames_advance(page)
                # The next offer connects: WebRTC is back, no page reload, no user action.
                await expect(page.locator("#transport")).to_have_attribute("data-transport", "webrtc", timeout=40000)
                first = await _wait_js(page, "window.personaRtc.frames >= 3 && window.personaRtc.frames")
                await _wait_js(page, f"window.personaRtc.frames >= {first + 5}")
                assert await page.evaluate("window.personaRtc.failures") == 1
                assert any("offering again in 5 s" in line for line in console), console
                assert len(service.webrtc.peers) == 1
                assert not errors, errors
            finally:
                await browser.close()
    finally:
        service.pool.shutdown(wait=True)


async def test_a_browser_without_webrtc_stays_on_the_websocket(service, tmp_path):
    from playwright.async_api import async_playwright, expect

    async with running(service) as server, async_playwright() as pw:
        browser, page, errors = await _open(pw, tmp_path, server.http_url + "/",
                                            init_script="delete window.RTCPeerConnection;")
        try:
            await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
            assert await page.evaluate("typeof RTCPeerConnection") == "undefined"
            await _canvas_frames_advance(page)
            await expect(page.locator("#transport")).to_have_attribute("data-transport", "websocket")
            await expect(page.locator("#media")).to_be_disabled()
            await expect(page.locator("#rtc-video")).to_be_hidden()
            assert not service.webrtc.peers
            assert not errors, errors
        finally:
            await browser.close()


async def test_the_page_stays_on_the_websocket_when_the_server_has_webrtc_off(tmp_path):
    from playwright.async_api import async_playwright, expect

    service = await asyncio.to_thread(make_service, webrtc=False)
    try:
        async with running(service) as server, async_playwright() as pw:
            browser, page, errors = await _open(pw, tmp_path, server.http_url + "/")
            try:
                await expect(page.locator("#connection")).to_have_attribute("data-state", "ready", timeout=20000)
                await _canvas_frames_advance(page)
                await expect(page.locator("#transport")).to_have_attribute("data-transport", "websocket")
                await expect(page.locator("#video")).to_be_visible()
                await expect(page.locator("#rtc-video")).to_be_hidden()
                assert await page.evaluate("window.personaRtc.transport") == "websocket"
                assert not errors, errors
            finally:
                await browser.close()
    finally:
        service.pool.shutdown(wait=True)
