"""The Persona tab's media transport inside the real ComfyUI frontend, in headless Chromium.

ComfyUI's own server (the `comfyui_server` fixture: `main.py --cpu`, the pack in custom_nodes/,
its `webrtc` extra installed) serves the tab, which loads the chat page's WebRTC client from
/persona/static/webrtc_media.js. With no choice made the tab offers (WebRTC is the default):
the badge says WebRTC, the <video> plays frames that keep coming (requestVideoFrameCallback
count and the decoder's own count), the canvas is hidden; picking the WebSocket brings the JPEG
frames back to the canvas, and after a reload the tab keeps that choice and never offers. In a
browser without RTCPeerConnection the tab falls back: the badge says WebSocket and the canvas
draws frames.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from test_comfyui_panel import CHROMIUM, CHROMIUM_ARGS, FRAMES_DRAWN, _open_panel, _post_json

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(900),  # a whole browser session on a slow 2-core box; each wait has its own cap
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]

BADGE = '[data-testid="persona-transport"]'


def _canvas_frames_advance(page, by: int = 5) -> None:
    start = page.evaluate(FRAMES_DRAWN)
    page.wait_for_function(f"() => ({FRAMES_DRAWN})() >= {start + by}", timeout=60_000)


@contextlib.contextmanager
def _panel(comfyui_server: str, profile: Path):
    """ComfyUI in Chromium with the Persona tab open: (page, console lines); no page errors at the end."""
    from playwright import sync_api

    _post_json(f"{comfyui_server}/settings", {"Comfy.TutorialCompleted": True})
    console: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context, page = _open_panel(playwright, profile, console, comfyui_server, CHROMIUM_ARGS, media=None)
        try:
            yield page
            assert not [line for line in console if line.startswith("pageerror")], console
        except Exception:
            print("\n".join(console[-40:]))  # the media client says why it left WebRTC
            raise
        finally:
            context.close()


def test_tab_plays_webrtc_by_default_and_keeps_a_choice_of_the_websocket(comfyui_server: str, tmp_path: Path) -> None:
    with _panel(comfyui_server, tmp_path / "profile") as page:
        assert page.get_by_test_id("persona-media").input_value() == "webrtc"
        try:
            page.locator(f'{BADGE}[data-transport="webrtc"]').wait_for(timeout=180_000)  # ICE + first frames, slow box
        except Exception:
            badge = page.locator(BADGE)
            raise AssertionError(f"no WebRTC: the badge says {badge.inner_text()!r} ({badge.get_attribute('title')!r})"
                                 ) from None
        assert page.locator(BADGE).inner_text().startswith("WebRTC (")
        assert page.get_by_test_id("persona-rtc-video").is_visible()
        assert page.get_by_test_id("persona-video").is_hidden()
        page.wait_for_function("() => window.personaPanelRtc.frames >= 3", timeout=60_000)
        first = page.evaluate("() => window.personaPanelRtc.frames")
        page.wait_for_function(f"() => window.personaPanelRtc.frames >= {first + 5}", timeout=60_000)
        stats = page.evaluate("() => window.personaPanelRtc.stats()")
        assert stats["transport"] == "webrtc" and stats["framesDecoded"] >= first + 5, stats
        size = page.evaluate("() => { const v = document.querySelector('[data-testid=persona-rtc-video]');"
                             " return [v.videoWidth, v.videoHeight]; }")
        assert size[0] > 0 and size[1] > 0, size

        page.get_by_test_id("persona-media").select_option("websocket")
        page.locator(f'{BADGE}[data-transport="websocket"]').wait_for(timeout=30_000)
        assert page.get_by_test_id("persona-video").is_visible()
        _canvas_frames_advance(page)
        assert page.evaluate("() => localStorage.getItem('persona.comfyui.media')") == "websocket"

        # After a reload the choice holds: a client that never offers.
        page.reload(wait_until="domcontentloaded")
        page.locator(".persona-chat-tab-button").wait_for(state="visible", timeout=60_000)
        if not page.get_by_test_id("persona-panel").is_visible():  # ComfyUI may reopen the last tab itself
            page.locator(".persona-chat-tab-button").click()
        page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
        assert page.get_by_test_id("persona-media").input_value() == "websocket"
        _canvas_frames_advance(page)
        assert page.evaluate("() => window.personaPanelRtc.pc === null && window.personaPanelRtc.offerId === null")
        assert page.locator(BADGE).get_attribute("data-transport") == "websocket"


def test_tab_falls_back_to_the_websocket_without_webrtc_in_the_browser(comfyui_server: str, tmp_path: Path) -> None:
    with _panel(comfyui_server, tmp_path / "profile") as page:
        # WebRTC (the default) in a browser that has none (as with WebRTC disabled by policy).
        page.add_init_script("delete window.RTCPeerConnection;")
        page.reload(wait_until="domcontentloaded")
        page.locator(".persona-chat-tab-button").wait_for(state="visible", timeout=60_000)
        if not page.get_by_test_id("persona-panel").is_visible():  # ComfyUI may reopen the last tab itself
            page.locator(".persona-chat-tab-button").click()
        page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
        assert page.evaluate("() => typeof RTCPeerConnection") == "undefined"
        assert page.get_by_test_id("persona-media").input_value() == "webrtc"
        _canvas_frames_advance(page)
        assert page.locator(BADGE).get_attribute("data-transport") == "websocket"
        assert page.locator(BADGE).inner_text() == "WebSocket"
        assert page.get_by_test_id("persona-rtc-video").is_hidden()
        assert page.evaluate("() => window.personaPanelRtc.transport") == "websocket"
