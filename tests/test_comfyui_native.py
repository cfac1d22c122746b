"""The canvas graph is the program: a workflow with core ComfyUI nodes, streamed and queued.

Against the real ComfyUI 0.3.75 (`comfyui_server`; the pack installed the Registry way):
- the Persona tab, in Chromium, streams the graph on the canvas (the preview renderer, Load
  Image → the card's reference, Image Scale on the frames, Create/Save Video with the pack's
  AUDIO): every chunk a prompt in ComfyUI's own queue, the frames the scaled ones, a message's
  prompt kept in ComfyUI's history;
- Run twice (the same prompt queued twice) gives two turns and frames that go on;
- `/interrupt` in the middle of a long chunk stops it, and the next run renders that chunk
  again from the same frame: no gap;
- the same workflow headless (`persona serve --comfyui`, ComfyUI's executor in-process)
  gives the same frames (JPEG bytes, byte for byte) and the same directives;
- the chunk prompts' events reach no ComfyUI page, a message's prompt the tab's page only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from comfyui_harness import free_port
from paths import REPO

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def core_workflow(chunk_frames: int = 4, text: str = "") -> dict:
    """The pack's chat graph with core nodes in the loop (API format, as Run queues it)."""
    return {
        "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "1": {"class_type": "PersonaCardLoader", "inputs": {"persona_id": "mira", "reference": ["10", 0]}},
        "2": {"class_type": "PersonaConversationTurn",
              "inputs": {"persona": ["1", 0], "text": text, "session_id": "default", "turn": 0}},
        "3": {"class_type": "PersonaInterpreter", "inputs": {"persona": ["1", 0], "turn": ["2", 0], "backend": "embedded"}},
        "4": {"class_type": "PersonaDirective", "inputs": {"action": "idle", "expression": "neutral", "intensity": 0.6,
                                                          "duration_s": 0.0, "dialogue": "", "turn": -1}},
        "5": {"class_type": "PersonaStateTracker",
              "inputs": {"persona": ["1", 0], "directives": ["3", 0], "session_id": "default", "manual": ["4", 0]}},
        "6": {"class_type": "PersonaPreviewRenderer",
              "inputs": {"persona": ["1", 0], "plan": ["5", 0], "session_id": "default", "width": 128, "height": 128,
                         "fps": 24.0, "seed": 0, "chunk_frames": chunk_frames}},
        "11": {"class_type": "PersonaFrameOutput", "inputs": {"frames": ["6", 0]}},
        "12": {"class_type": "ImageScale", "inputs": {"image": ["11", 0], "upscale_method": "nearest-exact",
                                                       "width": 160, "height": 160, "crop": "disabled"}},
        "13": {"class_type": "PersonaFramesFromImage", "inputs": {"frames": ["6", 0], "images": ["12", 0]}},
        "7": {"class_type": "PersonaStreamSink", "inputs": {"frames": ["13", 0]}},
        "14": {"class_type": "PersonaSpeak", "inputs": {"persona": ["1", 0], "text": ["3", 1]}},
        "15": {"class_type": "CreateVideo", "inputs": {"images": ["12", 0], "audio": ["14", 0], "fps": 24.0}},
        "16": {"class_type": "SaveVideo", "inputs": {"video": ["15", 0], "filename_prefix": "persona/clip",
                                                      "format": "auto", "codec": "auto"}},
    }


def _request(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if payload is None else "POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else {}


def _queue(server: str, prompt: dict) -> str:
    return _request(f"{server}/prompt", {"prompt": prompt, "client_id": "persona-test"})["prompt_id"]


def _wait_done(server: str, prompt_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = _request(f"{server}/history/{prompt_id}")
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(0.1)
    raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")


def _sink(entry: dict) -> dict:
    return entry["outputs"]["7"]["persona_stream"][0]


def test_run_twice_gives_two_turns_and_the_frames_go_on(comfyui_server: str) -> None:
    session = f"run-twice-{uuid.uuid4().hex[:6]}"
    prompt = core_workflow(text="please wave")
    for node in ("2", "5", "6"):
        prompt[node]["inputs"]["session_id"] = session
    first = _wait_done(comfyui_server, _queue(comfyui_server, prompt))
    second = _wait_done(comfyui_server, _queue(comfyui_server, prompt))
    for entry in (first, second):
        assert entry["status"]["status_str"] == "success", entry["status"]
    one, two = _sink(first), _sink(second)
    assert (one["shows_directives"], two["shows_directives"]) == ([1], [2]), "each Run is a new turn"
    assert two["first_index"] == one["first_index"] + one["count"], "the second Run goes on from the first"
    assert first["outputs"]["16"]["images"], "Save Video wrote the run's clip (with the persona's voice)"
    assert first["outputs"]["7"]["images"][0]["type"] == "temp", "the sink shows the run's last frame"


async def test_interrupt_mid_chunk_stops_it_and_the_next_run_has_no_gap(comfyui_server: str) -> None:
    """Cancel while the renderer is half way through a 240-frame chunk (ComfyUI's own
    progress events say where it is): the run stops, and the next one starts that chunk
    again at the same frame."""
    import websockets

    session = f"interrupt-{uuid.uuid4().hex[:6]}"
    long = core_workflow(chunk_frames=240)
    for node in ("2", "5", "6"):
        long[node]["inputs"]["session_id"] = session
    short = json.loads(json.dumps(long))
    short["6"]["inputs"]["chunk_frames"] = 4
    before = _sink(await asyncio.to_thread(_wait_done, comfyui_server, _queue(comfyui_server, short)))
    ws_url = comfyui_server.replace("http://", "ws://") + "/ws?clientId=persona-test"
    async with websockets.connect(ws_url, max_size=None) as events:
        interrupted = _queue(comfyui_server, long)
        while True:  # the renderer's progress bar: frame k of 240
            message = await asyncio.wait_for(events.recv(), 60)
            if isinstance(message, str):
                event = json.loads(message)
                data = event.get("data", {})
                if event.get("type") == "progress" and data.get("node") == "6" and 5 <= data.get("value", 0) < 240:
                    break
        await asyncio.to_thread(_request, f"{comfyui_server}/interrupt", {})
    entry = await asyncio.to_thread(_wait_done, comfyui_server, interrupted)
    events = [event for event, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in events, events
    after = _sink(await asyncio.to_thread(_wait_done, comfyui_server, _queue(comfyui_server, short)))
    assert after["first_index"] == before["first_index"] + before["count"], "no frame of the cut chunk was lost"


def test_the_tab_streams_the_canvas_graph_through_comfyuis_queue(comfyui_server: str, tmp_path: Path) -> None:
    from playwright import sync_api
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium")
    _request(f"{comfyui_server}/settings", {"Comfy.TutorialCompleted": True})
    console: list[str] = []
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            # The JPEG canvas path (WebRTC, the tab's default, is test_comfyui_panel_webrtc.py's).
            page.add_init_script("localStorage.setItem('persona.comfyui.media', 'websocket')")
            page.goto(comfyui_server, wait_until="domcontentloaded", timeout=60_000)
            page.locator(".persona-chat-tab-button").wait_for(state="visible", timeout=60_000)
            page.evaluate("async (api) => { await window.comfyAPI.app.app.loadApiJson(api, 'core-nodes'); }",
                          core_workflow())
            page.locator(".persona-chat-tab-button").click()
            page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
            page.get_by_test_id("persona-source").select_option("canvas")
            page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
            page.wait_for_function(
                "() => { const c = document.querySelector('[data-testid=persona-video]');"
                " return c.width === 160 && Number(c.dataset.framesDrawn || 0) >= 10; }", timeout=60_000)
            page.get_by_test_id("persona-message").fill("wave please")
            page.get_by_test_id("persona-message").press("Enter")
            reply = page.locator('[data-testid="persona-history"] li.persona[data-done="true"]').first
            reply.wait_for(timeout=60_000)
            assert "wave" in (reply.get_attribute("data-directives") or "")
            # A reload: the tab still says "this canvas" and the resumed session still streams it.
            page.reload(wait_until="domcontentloaded")
            page.locator(".persona-chat-tab-button").click()
            page.locator('[data-testid="persona-connection"][data-state="ready"]').wait_for(timeout=60_000)
            assert page.get_by_test_id("persona-source").input_value() == "canvas"
            assert page.evaluate("() => window.personaPanelClient.ready.resumed") is True
            page.get_by_test_id("persona-message").fill("nod please")
            page.get_by_test_id("persona-message").press("Enter")
            page.locator('[data-testid="persona-history"] li.persona[data-done="true"]').nth(1).wait_for(timeout=60_000)
        finally:
            context.close()
    assert not [line for line in console if "pageerror" in line], console
    history = _request(f"{comfyui_server}/history?max_items=50")
    for text in ("wave please", "nod please"):
        kept = [entry for entry in history.values()
                if any(node.get("class_type") == "ImageScale" for node in entry["prompt"][2].values())
                and entry["prompt"][2]["2"]["inputs"].get("text") == text]
        assert kept, f"{text!r}'s prompt, the canvas graph's, is in ComfyUI's history (the chunk-only ones are not)"


async def _headless_frames(python: Path, comfy_root: Path, workflow: Path, pythonpath: Path, frames: int,
                           output: Path) -> tuple:
    """(sha256 of the first `frames` JPEG frames, the directives of 'wave') from
    `persona serve --comfyui` running with ComfyUI's Python, its save nodes writing to `output`."""

    port = free_port()
    process = await asyncio.create_subprocess_exec(
        str(python), "-m", "comfyui_persona.headless", "serve", "--comfyui", str(comfy_root),
        "--comfyui-output-dir", str(output), "--workflow", str(workflow), "--port", str(port), "--no-warm-up", "--quiet", "--no-speech",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(pythonpath)},
    )
    try:
        seen = []
        while not re.search(r"http://127\.0\.0\.1:\d+/", seen[-1] if seen else ""):  # ComfyUI logs first
            line = (await asyncio.wait_for(process.stdout.readline(), 300)).decode()
            assert line, "".join(seen)
            seen.append(line)
        return await _stream(f"ws://127.0.0.1:{port}/persona/ws", None, frames)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)


async def _stream(url: str, workflow_id: str | None, frames: int) -> tuple:
    import websockets

    from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame

    async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
        hello = {"type": "hello"} if workflow_id is None else {"type": "hello", "workflow": workflow_id}
        await ws.send(json.dumps(hello))
        digests: dict[int, str] = {}
        directives, asked = None, False
        while len(digests) < frames or directives is None:
            data = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(data, bytes):
                kind, index, _, payload = parse_media_frame(data)
                if kind == MEDIA_JPEG and index < frames:
                    digests[index] = hashlib.sha256(payload).hexdigest()
                if len(digests) == frames and not asked:
                    await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "wave and smile"}))
                    asked = True
            else:
                message = json.loads(data)
                if message["type"] == "directives" and message.get("reply_to") == "c1":
                    directives = message["directives"]
                elif message["type"] == "error":
                    raise AssertionError(message)
        return digests, directives


async def test_the_same_workflow_headless_gives_the_same_frames_and_directives(comfyui, comfyui_server, tmp_path):
    """Inside ComfyUI (its queue) and headless (its executor in `persona serve`), from the
    start of a session: the same frames, byte for byte, and the same directives."""
    workflow = core_workflow()
    upload = urllib.request.Request(f"{comfyui_server}/persona/workflows", data=json.dumps(workflow).encode(),
                                    headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(upload, timeout=60) as response:
        workflow_id = json.loads(response.read())["id"]
    inside = await _stream(comfyui_server.replace("http://", "ws://") + "/persona/ws", workflow_id, 24)
    path = tmp_path / "core.json"
    path.write_text(json.dumps(workflow))
    package = tmp_path / "pythonpath"
    package.mkdir()
    (package / "comfyui_persona").symlink_to(REPO, target_is_directory=True)
    tree_output = comfyui.root / "output"
    before = sorted(tree_output.rglob("*")) if tree_output.exists() else []
    output = tmp_path / "saved"
    headless = await _headless_frames(comfyui.python, comfyui.root, path, package, 24, output)
    assert len(inside[0]) == 24 and inside == headless
    assert [d["action"] for d in inside[1]] == ["wave"]
    # Save Video wrote where --comfyui-output-dir says, not into the (cached) ComfyUI install.
    assert list((output / "persona").glob("clip_*")), sorted(output.rglob("*"))
    assert (sorted(tree_output.rglob("*")) if tree_output.exists() else []) == before


async def test_cancel_pauses_a_streaming_session_and_resume_goes_on(comfyui_server: str) -> None:
    """ComfyUI's Cancel while the tab streams: the viewer gets `interrupted`, nothing renders,
    and `resume` brings the frames back from where they stopped."""
    import websockets

    from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame

    long = core_workflow(chunk_frames=240)
    long["6"]["inputs"].update(width=256, height=256)  # chunks that take a while: Cancel lands inside one
    status, body = _upload_workflow(comfyui_server, long)
    assert status == 201, body
    ws_url = comfyui_server.replace("http://", "ws://") + "/persona/ws"
    async with websockets.connect(ws_url, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "hello", "workflow": body["id"]}))
        last = -1
        dropped_at_last = 0  # `dropped` when frame `last` arrived
        dropped = 0  # the server's count of frames it dropped for a slow viewer (`metrics`)

        def note_metrics(text: str) -> dict:
            nonlocal dropped
            message = json.loads(text)
            if message["type"] == "metrics":
                dropped = message["dropped"]
            return message

        while last < 0:
            data = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_JPEG:
                last, dropped_at_last = parse_media_frame(data)[1], dropped
            elif isinstance(data, str):
                note_metrics(data)
        error = None
        await asyncio.to_thread(_request, f"{comfyui_server}/interrupt", {})  # once: in a chunk or between two
        while error is None:
            data = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_JPEG:
                last, dropped_at_last = parse_media_frame(data)[1], dropped
            elif isinstance(data, str) and note_metrics(data)["type"] == "error":
                error = json.loads(data)
        assert error["code"] == "interrupted", error
        await ws.send(json.dumps({"type": "resume", "id": "r1"}))
        indexes: list[int] = []
        reports = 0  # metrics messages after the frames (a second apart): they count the drops
        while len(indexes) < 4 or reports < 2:
            data = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_JPEG:
                indexes.append(parse_media_frame(data)[1])
            elif isinstance(data, str) and note_metrics(data)["type"] == "metrics" and len(indexes) >= 4:
                reports += 1
        # From where they stopped: no frame missing but those the server says it dropped for a
        # viewer slower than the stream (a loaded box: chunks of 240 frames land at once) since
        # the last frame seen before the cancel (drops after it, before the cancel, are in the
        # gap too: a CI run skipped 472 = 232 + 232 + 8), give or take one queue of frames (8)
        # in flight when the counts were read. A lost chunk is 240 frames.
        skipped = indexes[0] - (last + 1)
        assert skipped <= dropped - dropped_at_last + 8, (last, indexes, dropped_at_last, dropped)
        assert indexes == sorted(indexes), indexes


async def test_one_cancel_pauses_a_fast_stream_between_its_chunks(comfyui_server: str) -> None:
    """The preview's chunks take milliseconds and the stream waits for its viewer most of the
    time: a Cancel pressed between two chunk prompts (ComfyUI clears an interrupt when the next
    prompt starts) still pauses it, with nothing else in the queue to stop; resume goes on, and a
    Cancel pressed while it was paused does not pause it again."""
    import websockets

    status, body = _upload_workflow(comfyui_server, core_workflow())
    assert status == 201, body
    ws_url = comfyui_server.replace("http://", "ws://") + "/persona/ws"
    async with websockets.connect(ws_url, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "hello", "workflow": body["id"]}))
        frames = 0
        while frames < 12:
            frames += isinstance(await asyncio.wait_for(ws.recv(), 60), bytes)
        await asyncio.to_thread(_request, f"{comfyui_server}/interrupt", {})
        error, after = None, 0
        while error is None:
            data = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(data, str) and json.loads(data)["type"] == "error":
                error = json.loads(data)
            after += isinstance(data, bytes)
            assert after < 240, "the Cancel was lost: 10 s of frames later the stream goes on"
        assert error["code"] == "interrupted" and "cancelled in ComfyUI" in error["message"], error
        await asyncio.to_thread(_request, f"{comfyui_server}/interrupt", {})  # while paused
        await ws.send(json.dumps({"type": "resume", "id": "r1"}))
        frames = 0
        while frames < 24:
            data = await asyncio.wait_for(ws.recv(), 60)
            frames += isinstance(data, bytes)
            assert isinstance(data, bytes) or json.loads(data)["type"] != "error", data


def _upload_workflow(server: str, workflow: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server}/persona/workflows", data=json.dumps(workflow).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


async def test_chunk_prompts_reach_no_page_and_a_message_prompt_reaches_the_tab_only(comfyui_server: str) -> None:
    """Each chunk is a prompt in ComfyUI's queue, several a second: their events (executing,
    progress, executed with outputs) go to no ComfyUI page (they froze the tab's page), and a
    prompt without a client id would be broadcast to every page. The prompt that carries a
    message goes to the tab whose client id the hello names (its canvas shows that run), and
    to no other page. Every page hears the queue `status` (its frontend fetches /queue and
    /history on each one): streaming counts as one running item (ComfyUI's Cancel stays
    enabled), the message's prompt changes it, a chunk prompt does not."""
    import websockets

    ws_base = comfyui_server.replace("http://", "ws://")
    run_events = {"execution_start", "executing", "executed", "progress", "execution_success"}

    async def listen(client_id: str, heard: list[str], prompts: set[str], connected: asyncio.Event,
                     statuses: list[int]) -> None:
        async with websockets.connect(f"{ws_base}/ws?clientId={client_id}", max_size=None) as page:
            async for message in page:
                if isinstance(message, str):
                    event = json.loads(message)
                    if event.get("type") in run_events:
                        heard.append(event["type"])
                        prompts.add(event.get("data", {}).get("prompt_id"))
                    elif event.get("type") == "status" and connected.is_set():
                        statuses.append(event["data"]["status"]["exec_info"]["queue_remaining"])
                connected.set()  # ComfyUI greets a page with its queue status

    tab, tab_prompts, other, other_prompts, statuses = [], set(), [], set(), []
    connected = [asyncio.Event(), asyncio.Event()]
    listeners = [asyncio.create_task(listen("persona-tab", tab, tab_prompts, connected[0], [])),
                 asyncio.create_task(listen("bystander", other, other_prompts, connected[1], statuses))]
    try:
        for event in connected:
            await asyncio.wait_for(event.wait(), 60)
        async with websockets.connect(f"{ws_base}/persona/ws", max_size=None, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "hello", "comfy_client_id": "persona-tab"}))
            frames, replied = 0, False
            while frames < 24 or not replied or "executing" not in tab:  # chunk prompts and a message's
                data = await asyncio.wait_for(ws.recv(), 60)
                if isinstance(data, bytes):
                    frames += 1
                    assert frames < 1200, f"the tab's page heard only {tab} of the message's run ({statuses})"
                    if frames == 12:  # chunks flow: the queue counts the stream, once
                        queued = await asyncio.to_thread(_request, f"{comfyui_server}/prompt")
                        assert queued["exec_info"]["queue_remaining"] == 1, queued
                        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "wave please"}))
                else:
                    message = json.loads(data)
                    assert message["type"] != "error", message
                    replied = replied or (message["type"] == "reply" and message.get("done") is True)

            async def message_counted() -> None:  # its prompt beside the stream (sent before it ran)
                while 2 not in statuses:
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(message_counted(), 60)
    finally:
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    assert not other, f"a bystander page heard the stream's runs: {other[:10]}"
    assert len(tab_prompts - {None}) == 1, f"the tab heard {len(tab_prompts - {None})} prompts, not the message's alone"
    # The stream's start (1, unless one ended just before), the message's prompt queued (2), started
    # (the running one changes), done (1); nothing per chunk prompt (there were three statuses each).
    assert len(statuses) <= 6 and set(statuses) <= {0, 1, 2}, f"the bystander heard the queue status {statuses}"
