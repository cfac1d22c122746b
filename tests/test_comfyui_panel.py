"""The Persona sidebar tab inside the real ComfyUI frontend (1.32.9), in headless Chromium.

ComfyUI's own server (`main.py --cpu`, the `comfyui_server` fixture) loads the pack from
custom_nodes/, which mounts `/persona/ws` on PromptServer; the browser opens ComfyUI's UI,
finds our tab, chats, and must see the persona's reply, the directives and live frames.
Debian's Chromium is driven through the `playwright` package (no browser download).
Screenshots: test-artifacts/comfyui_panel.png (every run) and docs/images/comfyui_panel.png.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
import uuid
from pathlib import Path

import pytest

from paths import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


def _post_json(url: str, payload: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_sidebar_tab_chats_and_shows_live_frames(comfyui_server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    # A first visit would open the templates browser over the canvas: mark the tutorial seen.
    _post_json(f"{comfyui_server}/settings", {"Comfy.TutorialCompleted": True})
    console: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1920, "height": 1000},
        )
        try:
            page = context.new_page()
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            page.goto(comfyui_server, wait_until="domcontentloaded", timeout=60_000)

            tab = page.locator(".persona-chat-tab-button")
            tab.wait_for(state="visible", timeout=60_000)
            tab.click()
            panel = page.get_by_test_id("persona-panel")
            panel.wait_for(state="visible", timeout=10_000)
            page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
            assert page.get_by_test_id("persona-name").inner_text().strip() != "Persona", "ready named no persona"

            page.get_by_test_id("persona-message").fill("Hi! Could you wave at me, please?")
            page.get_by_test_id("persona-message").press("Enter")
            reply = page.locator('[data-testid="persona-history"] li.persona[data-done="true"]').first
            reply.wait_for(timeout=60_000)
            assert reply.get_attribute("data-directives"), "no directives message arrived"
            assert "wave" in reply.get_attribute("data-directives")
            text = reply.inner_text()
            assert len(text.split("\n")[0].strip()) > 3, f"empty reply: {text!r}"

            # Live video: frames keep arriving and the canvas is not blank.
            page.wait_for_function(
                "() => Number(document.querySelector('[data-testid=persona-video]').dataset.framesDrawn || 0) >= 10",
                timeout=60_000,
            )
            spread = page.evaluate(
                """() => {
                    const c = document.querySelector('[data-testid=persona-video]');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let lo = 255, hi = 0;
                    for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i + 1]); hi = Math.max(hi, d[i + 1]); }
                    return hi - lo;
                }"""
            )
            assert spread > 40, f"the live video canvas looks blank (green channel spread {spread})"
            # The character status indicator follows the directive.
            page.wait_for_function(
                "() => document.querySelector('[data-testid=persona-action]').textContent !== ''", timeout=10_000
            )
            assert page.locator('[data-testid="persona-quick"] button[data-action="wave"]').count() == 1

            # The picture: the preview workflow on the canvas (its `id` normalised to a UUID here
            # only; the file itself is checked below), the frontend's news banner closed.
            workflow = json.loads((REPO / "workflows" / "persona_preview_chat.json").read_text())
            workflow["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, str(workflow["id"])))
            page.evaluate("async (graph) => { await window.comfyAPI.app.app.loadGraphData(graph); }", workflow)
            page.evaluate(
                """() => {
                    for (const button of document.querySelectorAll('button')) {
                        const bar = button.parentElement;
                        if (!button.textContent.trim() && bar && bar.textContent.includes('Introducing Nodes 2.0')) {
                            button.click();
                            return;
                        }
                    }
                }"""
            )
            # Frame the whole graph right of the panel (screen = (pos + offset) * scale).
            page.evaluate(
                """() => {
                    const canvas = window.comfyAPI.app.app.canvas;
                    canvas.ds.scale = 0.62;
                    canvas.ds.offset = [450 / 0.62 - 40, 110 / 0.62];
                    canvas.setDirty(true, true);
                }"""
            )
            page.mouse.move(900, 800)  # no hover tooltip in the picture
            page.wait_for_timeout(500)
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "comfyui_panel.png"
            page.screenshot(path=str(shot))
            images = REPO / "docs" / "images"
            images.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, images / "comfyui_panel.png")

            # The frontend accepts every saved UI workflow as it is on disk (zod schema, known nodes).
            for name in ("persona_longlive_sparse", "persona_longlive_chat", "persona_preview_chat"):
                workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
                page.evaluate("async (graph) => { await window.comfyAPI.app.app.loadGraphData(graph); }", workflow)
                page.wait_for_timeout(300)
                problems = page.evaluate(
                    """() => [...document.querySelectorAll('.p-toast-message, .p-dialog')]
                        .map((e) => e.textContent).filter((t) => /invalid workflow|missing node/i.test(t))"""
                )
                assert not problems, f"ComfyUI's frontend rejected {name}.json: {problems}"
                loaded = page.evaluate("() => window.comfyAPI.app.app.graph.nodes.map((n) => n.type)")
                assert sorted(loaded) == sorted(n["type"] for n in workflow["nodes"])
        except Exception:
            print("\n".join(console[-40:]))
            raise
        finally:
            context.close()
    errors = [line for line in console if line.startswith("pageerror") and "persona" in line.lower()]
    assert not errors, errors
