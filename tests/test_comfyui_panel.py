"""The Persona sidebar tab inside the real ComfyUI frontend (1.32.9), in headless Chromium.

ComfyUI's own server (`main.py --cpu`, the `comfyui_server` fixture) loads the pack from
custom_nodes/, which mounts `/persona/ws` on PromptServer; the browser opens ComfyUI's UI,
finds our tab, chats, and must see the persona's reply, the directives and live frames; with
another sidebar tab open a while the socket closes, and the tab shown again resumes the
session; ComfyUI's own Cancel (enabled while the tab streams) pauses it and Resume goes on; then hear the spoken reply (non-silent PCM decoded by the panel's Web Audio player),
record the session and download an MP4 that decodes with video and audio, pick another of
the built-in personas from the gallery, and see a bad card refused with the server's message.
Debian's Chromium is driven through the `playwright` package (no browser download).
Screenshots: test-artifacts/comfyui_panel.png and comfyui_panel_gallery.png (every run),
copied to docs/images/ when PERSONA_UPDATE_DOC_IMAGES=1.
"""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
from pathlib import Path

import pytest

from paths import REPO, publish_doc_image

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
    pytest.mark.timeout(900),  # a whole browser session on a slow 2-core box; each wait has its own cap
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


#: Browsers start audio only after a user gesture; the test has none to give.
AUDIO_ARGS = ["--autoplay-policy=no-user-gesture-required"]
BUILTIN_PERSONAS = 7
#: JS: how many frames the tab's JPEG canvas has drawn.
FRAMES_DRAWN = "() => Number(document.querySelector('[data-testid=persona-video]').dataset.framesDrawn || 0)"


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _open_panel(playwright, profile: Path, console: list[str], server: str, args: list[str],
                media: str | None = "websocket"):
    """Chromium on ComfyUI's page with the Persona tab open and its session ready. `media`: the
    tab's Media choice, saved before it loads (the JPEG canvas and PCM player these tests read);
    None saves none, so the tab uses its default (WebRTC, test_comfyui_panel_webrtc.py)."""
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=args, headless=True,
        viewport={"width": 1920, "height": 1000},
    )
    # Every wait is for an event; the cap is generous for a slow 2-core box (clicks waiting for
    # ComfyUI's navigations timed out at Playwright's default 30 s on one).
    context.set_default_timeout(120_000)
    page = context.new_page()
    if media is not None:
        page.add_init_script(f"localStorage.setItem('persona.comfyui.media', '{media}')")
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.goto(server, wait_until="domcontentloaded", timeout=60_000)
    tab = page.locator(".persona-chat-tab-button")
    tab.wait_for(state="visible", timeout=60_000)
    tab.click()
    page.get_by_test_id("persona-panel").wait_for(state="visible", timeout=10_000)
    page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
    return context, page


def _post_json(url: str, payload: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def _picture(page, name: str, settle_ms: int = 0) -> None:
    """Screenshot the page into test-artifacts/`name` (and docs/images/ when asked): the
    frontend's news banner closed, the graph framed right of the panel (screen = (pos +
    offset) * scale), the mouse away so no hover tooltip shows."""
    page.evaluate(
        """() => {
            for (const button of document.querySelectorAll('button')) {
                const bar = button.parentElement;
                if (!button.textContent.trim() && bar && bar.textContent.includes('Introducing Nodes 2.0')) {
                    button.click();
                    break;
                }
            }
            const canvas = window.comfyAPI.app.app.canvas;
            canvas.ds.scale = 0.62;
            canvas.ds.offset = [450 / 0.62 - 40, 110 / 0.62];
            canvas.setDirty(true, true);
        }"""
    )
    page.mouse.move(900, 800)
    if settle_ms:
        page.wait_for_timeout(settle_ms)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot))
    publish_doc_image(shot, name)


def test_sidebar_tab_chats_and_shows_live_frames(comfyui_server: str, tmp_path: Path) -> None:
    from playwright import sync_api
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
            # The JPEG canvas path; WebRTC, the tab's default, is test_comfyui_panel_webrtc.py's.
            page.add_init_script("localStorage.setItem('persona.comfyui.media', 'websocket')")
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
                f"() => ({FRAMES_DRAWN})() >= 10",
                timeout=60_000,
            )
            # Streaming is one running item in ComfyUI's queue: the Run bar's Cancel is enabled.
            cancel = page.locator('button[aria-label="Cancel current run"]')
            assert cancel.is_enabled(), "ComfyUI's Cancel is disabled while the tab streams"
            # From here no message is sent, only chunks stream: the page fetches the queue and
            # the history (ComfyUI's frontend does, three requests per queue status event) for
            # the message's prompt ending, the hide and the resume below; not per chunk prompt
            # (three status events each, a dozen prompts a second, froze this page on a slow box).
            queue_fetches: list[str] = []
            page.on("request", lambda request: queue_fetches.append(request.url)
                    if "/api/queue" in request.url or "/api/history" in request.url else None)
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
            _picture(page, "comfyui_panel.png", settle_ms=500)

            # Another sidebar tab a while: the socket closes (nothing renders for nobody); the
            # Persona tab again: the same session resumes and frames flow.
            session = page.evaluate("() => window.personaPanelClient.ready.session")
            page.locator(".node-library-tab-button").click()
            page.wait_for_function("() => window.personaPanelClient.ws === null", timeout=60_000)
            page.locator(".persona-chat-tab-button").click()
            page.wait_for_function(
                "(id) => window.personaPanelClient.ready?.resumed === true && window.personaPanelClient.ready.session === id",
                arg=session, timeout=60_000)
            drawn = page.evaluate(FRAMES_DRAWN)
            page.wait_for_function(f"(n) => ({FRAMES_DRAWN})() >= n + 5", arg=drawn, timeout=60_000)
            assert len(queue_fetches) <= 15, f"streaming made the page fetch {len(queue_fetches)}: {queue_fetches[:4]}"
            assert cancel.is_enabled(), "ComfyUI's Cancel is disabled while the tab streams"
            # ComfyUI's Cancel pauses the stream (the chunk in flight is interrupted); Resume goes on.
            cancel.click()
            page.get_by_test_id("persona-resume").wait_for(state="visible", timeout=60_000)
            page.get_by_test_id("persona-resume").click()
            drawn = page.evaluate(FRAMES_DRAWN)
            page.wait_for_function(f"(n) => ({FRAMES_DRAWN})() >= n + 5", arg=drawn, timeout=60_000)

            # A reload mid-stream: the same conversation resumes and its chat is drawn again, once.
            page.reload(wait_until="domcontentloaded")
            page.locator(".persona-chat-tab-button").click()
            page.wait_for_function(
                "(id) => window.personaPanelClient?.ready?.resumed === true && window.personaPanelClient.ready.session === id",
                arg=session, timeout=60_000)
            users = page.locator('[data-testid="persona-history"] li.user')
            assert users.all_inner_texts() == ["Hi! Could you wave at me, please?"], users.all_inner_texts()
            redrawn = page.locator('[data-testid="persona-history"] li.persona').first
            assert "wave" in (redrawn.get_attribute("data-directives") or ""), redrawn.inner_text()

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

            # A changed seed restarts the stream, so a node added from the library keeps its seed
            # (the frontend's default control is "randomize": every Run restarted the stream), and
            # a saved workflow keeps the control it was saved with.
            controls = """(type) => window.comfyAPI.app.app.graph.nodes.concat([window.LiteGraph.createNode(type)])
                .filter((n) => n.type === type).map((n) => n.widgets.find((w) => w.name === "seed").linkedWidgets[0].value)"""
            assert page.evaluate(controls, "PersonaLongLiveSampler") == ["fixed"]
            workflow = json.loads((REPO / "workflows" / "persona_preview_chat.json").read_text())
            renderer = next(n for n in workflow["nodes"] if n["type"] == "PersonaPreviewRenderer")
            renderer["widgets_values"][renderer["widgets_values"].index("fixed")] = "increment"
            page.evaluate("async (graph) => { await window.comfyAPI.app.app.loadGraphData(graph); }", workflow)
            assert page.evaluate(controls, "PersonaPreviewRenderer") == ["increment", "fixed"]
        except Exception:
            print("\n".join(console[-40:]))
            raise
        finally:
            context.close()
    errors = [line for line in console if line.startswith("pageerror") and "persona" in line.lower()]
    assert not errors, errors


def test_sidebar_tab_speaks_records_and_switches_persona(comfyui_server: str, tmp_path: Path) -> None:
    import av
    import numpy as np
    from playwright import sync_api

    _post_json(f"{comfyui_server}/settings", {"Comfy.TutorialCompleted": True})
    console: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context, page = _open_panel(playwright, tmp_path / "profile", console, comfyui_server,
                                    CHROMIUM_ARGS + AUDIO_ARGS)
        try:
            # -- the gallery lists the built-in personas, with portraits -----------------
            personas = _get_json(f"{comfyui_server}/persona/personas")
            builtin = [p for p in personas if p["builtin"]]
            assert len(builtin) == BUILTIN_PERSONAS, [p["id"] for p in personas]
            gallery = page.locator('[data-testid="persona-gallery"] button')
            page.get_by_text("Personas", exact=True).click()  # open the <details>
            page.wait_for_function(
                f"() => document.querySelectorAll('[data-testid=persona-gallery] button').length >= {len(personas)}",
                timeout=60_000,
            )
            shown = gallery.evaluate_all("(buttons) => buttons.map((b) => b.dataset.persona)")
            assert {p["id"] for p in builtin} <= set(shown)
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=persona-gallery] img')]"
                ".every((i) => i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
            current = page.evaluate("() => document.querySelector('[data-testid=persona-gallery] "
                                    "button[aria-current=true]')?.dataset.persona")
            assert current in shown, "the session's persona is marked in the gallery"

            # -- record, speak, stop: the download is an MP4 with video and audio -----------
            page.get_by_test_id("persona-record").click()
            try:
                page.locator('[data-testid="persona-record"][aria-pressed="true"]').wait_for(timeout=120_000)
            except sync_api.TimeoutError:
                panel = page.get_by_test_id("persona-panel").inner_text()
                raise AssertionError(f"recording did not start; the panel shows:\n{panel}") from None
            page.get_by_test_id("persona-message").fill("Hello! Tell me about your day, please.")
            page.get_by_test_id("persona-message").press("Enter")
            page.locator('[data-testid="persona-history"] li.persona[data-done="true"]').first.wait_for(timeout=60_000)
            # Non-silent speech reaches the panel's Web Audio player and is scheduled.
            try:
                page.wait_for_function(
                    "() => { const s = window.personaPanelAudio?.stats;"
                    " return s && s.samples > 22050 * 0.5 && s.scheduled > 0; }",
                    timeout=60_000,
                )
            except sync_api.TimeoutError:
                seen = page.evaluate(
                    "() => ({audio: {...window.personaPanelAudio?.stats}, frames:"
                    " document.querySelector('[data-testid=persona-video]').dataset.framesDrawn,"
                    " panel: document.querySelector('[data-testid=persona-panel]').innerText})"
                )
                raise AssertionError(f"no speech reached the player: {seen}") from None
            stats = page.evaluate("() => ({...window.personaPanelAudio.stats})")
            assert stats["rms"] > 0.01, f"the speech the panel decoded is silent: {stats}"
            page.wait_for_function("() => window.personaPanelAudio.stats.played > 0", timeout=30_000)
            page.get_by_test_id("persona-mute").click()
            assert page.evaluate("() => window.personaPanelAudio.muted") is True
            assert page.get_by_test_id("persona-mute").get_attribute("aria-pressed") == "true"
            page.wait_for_timeout(1500)  # let the recording hold some of the speech
            page.get_by_test_id("persona-record").click()
            link = page.locator('[data-testid="persona-recording-link"]:not([hidden])')
            link.wait_for(timeout=180_000)  # the MP4 is finished after the encoder catches up: slow on a loaded box
            href = link.get_attribute("href")
            assert href and href.endswith(".mp4"), href
            with urllib.request.urlopen(f"{comfyui_server}{href}", timeout=60) as response:
                assert response.headers.get_content_type() == "video/mp4"
                data = response.read()
            with av.open(io.BytesIO(data)) as container:
                assert container.streams.video and container.streams.audio, "the MP4 needs video and audio"
                frames = sum(1 for _ in container.decode(video=0))
            with av.open(io.BytesIO(data)) as container:
                pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
            assert frames >= 10, frames
            assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 0.005, "the recording's audio is silent"
            label = link.inner_text()
            assert f"{frames} frames" in label, (label, frames)

            # -- switch to another built-in persona: a new session whose ready names it -----
            other = next(p for p in builtin if p["id"] != current)
            page.locator(f'[data-testid="persona-gallery"] button[data-persona="{other["id"]}"]').click()
            page.wait_for_function(
                "(name) => document.querySelector('[data-testid=persona-name]').textContent === name",
                arg=other["name"], timeout=60_000,
            )
            page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
            marked = page.locator(f'[data-testid="persona-gallery"] button[data-persona="{other["id"]}"]')
            assert marked.get_attribute("aria-current") == "true"

            # -- a bad card is refused with the server's own message ---------------------------
            page.get_by_test_id("persona-card-file").set_input_files(
                files=[{"name": "broken.json", "mimeType": "application/json", "buffer": b'{"spec": "nope"'}]
            )
            note = page.locator('[data-testid="persona-gallery-message"][data-kind="error"]')
            note.wait_for(timeout=60_000)
            assert note.inner_text().startswith("bad_card: "), note.inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "comfyui_panel_gallery.png"
            page.get_by_test_id("persona-panel").screenshot(path=str(shot))
            publish_doc_image(shot, "comfyui_panel_gallery.png")
        except Exception:
            print("\n".join(console[-40:]))
            raise
        finally:
            context.close()
    errors = [line for line in console if line.startswith("pageerror") and "persona" in line.lower()]
    assert not errors, errors
