"""Scene sessions over the wire (protocol v1.1, issue 20): `hello.scene`, the cast in `ready`,
addressed directives, each character's state, bad input, and a v1 client that sees no
difference. Real server on port 0, the saved preview workflow, the embedded interpreter, the
built-in cards."""

from __future__ import annotations

import asyncio
import json

import websockets
from aiohttp import web

from comfyui_persona.headless.runner import WorkflowGraph, load_workflow
from comfyui_persona.headless.server import PersonaService, ServerConfig
from comfyui_persona.headless.server.protocol import MEDIA_AUDIO, MEDIA_JPEG, parse_media_frame
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.video.voice import get_synthesizer, stream_utterances
from comfyui_persona.video.voice.base import STREAM_RATE
from server_harness import TIMEOUT, WORKFLOW, hello, recv_json, running, service_fixtures, wait_for_type

service, _warm = service_fixtures(resume_grace_s=5.0, speech=False)


def spoken_seconds(voice, text: str) -> float:
    """How long `text` lasts in `voice` (synthesised here, sentence by sentence)."""
    return sum(u.duration_ms for u in stream_utterances(get_synthesizer(voice.engine), text, voice)) / 1000


def connect(server):
    return websockets.connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=5, max_size=None)


async def chat(ws, message_id: str, text: str) -> tuple[list[dict], list[dict]]:
    """(directives, replies) for one chat message: replies until each directive's performer
    that answers has answered (a scene sends one `reply` per speaker)."""
    await ws.send(json.dumps({"type": "chat", "id": message_id, "text": text}))
    directives = (await wait_for_type(ws, "directives", reply_to=message_id))["directives"]
    return directives, await replies_to(ws, message_id, len({d.get("character") for d in directives}))


async def replies_to(ws, message_id: str, count: int) -> list[dict]:
    out = []
    while len(out) < count:
        message = await wait_for_type(ws, "reply", reply_to=message_id)
        if message["done"]:
            out.append(message)
    return out


async def test_a_v1_client_in_a_one_persona_session_sees_no_difference(service):
    """Nothing a v1 client gets names a character or a scene; the payloads are v1's."""
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws, persona="mira")
        assert ready["type"] == "ready" and ready["protocol"] == 1 and ready["persona"]["id"] == "mira"
        assert "scene" not in ready and "states" not in ready and "character" not in ready["state"]
        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave"}))
        seen: list[dict] = []
        while not any(m["type"] == "reply" and m.get("done") for m in seen):
            seen.append(await recv_json(ws, skip=("metrics",)))
        directives = next(m for m in seen if m["type"] == "directives")["directives"]
        assert [d["action"] for d in directives] == ["wave"]
        assert set(directives[0]) == {"action", "expression", "dialogue", "intensity", "duration_s"}
        for message in seen:
            assert "character" not in message and "character" not in message.get("state", {}), message
        reply = next(m for m in seen if m["type"] == "reply" and m["done"])
        assert set(reply) == {"type", "reply_to", "text", "done"}
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
            "action": "nod", "expression": "smile", "intensity": 0.5}}))
        performed = (await wait_for_type(ws, "directives", reply_to="a1"))["directives"]
        assert [d["action"] for d in performed] == ["nod"] and "character" not in performed[0]


async def test_a_scene_addresses_each_persona_and_draws_them_all(service):
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws, scene=["mira", "bjorn"])
        assert ready["persona"]["id"] == "mira"  # the lead, as a v1 field
        assert [p["id"] for p in ready["scene"]["personas"]] == ["mira", "bjorn"]
        assert "wave" in ready["scene"]["personas"][1]["vocabulary"]["actions"]
        assert set(ready["states"]) == {"mira", "bjorn"} and "scenes" in ready["features"]

        directives, replies = await chat(ws, "c1", "Mira, wave; Bjorn, sit down")
        assert [(d["character"], d["action"]) for d in directives] == [("mira", "wave"), ("bjorn", "sit")]
        assert [r["character"] for r in replies] == ["mira", "bjorn"]  # one line each, in cast order
        sitting = await wait_for_type(ws, "state", timeout=20.0)
        while not (sitting["state"].get("character") == "bjorn" and sitting["state"]["pose"] == "sitting"):
            sitting = await wait_for_type(ws, "state", timeout=20.0)

        directives, replies = await chat(ws, "c2", "everyone clap")
        assert [(d["character"], d["action"]) for d in directives] == [("mira", "clap"), ("bjorn", "clap")]
        assert {r["character"] for r in replies} == {"mira", "bjorn"}

        # a shortcut button for one character of the scene
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
            "action": "nod", "expression": "smile", "intensity": 0.5, "character": "bjorn"}}))
        performed = (await wait_for_type(ws, "directives", reply_to="a1"))["directives"]
        assert [(d["character"], d["action"]) for d in performed][-1] == ("bjorn", "nod")

        # the stream is one picture holding both
        while True:
            data = await asyncio.wait_for(ws.recv(), TIMEOUT)
            if isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_JPEG:
                break
        session = next(iter(service.sessions.values()))
        backend = session.runtime.renderer.backend
        assert type(backend).__name__ == "ScenePreviewRenderer" and backend.cast == ("mira", "bjorn")


async def test_a_hello_naming_one_persona_does_not_resume_a_scene(service):
    """A tab that was in a scene reloads as `?persona=mira`: it gets Mira alone, in a new
    session, as it did after a restart (the saved scene is not resumed under another cast);
    the same scene asked again, or nothing asked, resumes it."""
    async with running(service) as server:
        async with connect(server) as ws:
            scene = (await hello(ws, scene=["mira", "bjorn"]))["session"]
        async with connect(server) as ws:
            alone = await hello(ws, session=scene, persona="mira")
            assert alone["resumed"] is False and alone["session"] != scene and "scene" not in alone
        for again in ({"scene": ["mira", "bjorn"]}, {}):
            async with connect(server) as ws:
                ready = await hello(ws, session=scene, **again)
                assert ready["resumed"] is True and ready["session"] == scene, again
                assert [p["id"] for p in ready["scene"]["personas"]] == ["mira", "bjorn"]


async def test_bad_scenes_and_directives_are_clear_errors_and_the_session_goes_on(service):
    async with running(service) as server, connect(server) as ws:
        for fields, code, words in (
            ({"scene": ["mira", "nobody"]}, "unknown_persona", "nobody"),
            ({"scene": ["mira", "mira"]}, "invalid", "repeated: mira"),
            ({"scene": ["mira", "bjorn", "ada", "juno", "sol"]}, "invalid", "5 personas; a scene holds 1 to 4"),
            ({"scene": "mira"}, "invalid", "list of persona ids"),
            ({"scene": ["mira", "bjorn"], "persona": "mira"}, "invalid", "exclude each other"),
        ):
            error = await hello(ws, **fields)
            assert error["type"] == "error" and error["code"] == code and words in error["message"], error
            assert not error.get("fatal")
        ready = await hello(ws, scene={"personas": ["bjorn", "ada"]})  # a scene file's object works too
        assert [p["id"] for p in ready["scene"]["personas"]] == ["bjorn", "ada"]
        async with connect(server) as other:  # a scene of one is a scene: the 1.1 fields are there
            alone = await hello(other, scene=["ada"])
            assert [p["id"] for p in alone["scene"]["personas"]] == ["ada"] and set(alone["states"]) == {"ada"}
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
            "action": "wave", "expression": "smile", "intensity": 0.5, "character": "mira"}}))
        error = await wait_for_type(ws, "error", reply_to="a1")
        assert error["code"] == "invalid" and "'mira' is not in this scene (bjorn, ada)" in error["message"]
        directives, _ = await chat(ws, "c1", "professor, nod")  # the session goes on
        assert [(d["character"], d["action"]) for d in directives] == [("ada", "nod")]


async def test_a_one_persona_session_refuses_a_directive_for_someone_else(service):
    async with running(service) as server, connect(server) as ws:
        await hello(ws, persona="mira")
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
            "action": "wave", "expression": "smile", "intensity": 0.5, "character": "bjorn"}}))
        error = await wait_for_type(ws, "error", reply_to="a1")
        assert error["code"] == "invalid" and "'bjorn' is not in this scene (mira)" in error["message"]
        await ws.send(json.dumps({"type": "action", "id": "a2", "directive": {
            "action": "wave", "expression": "smile", "intensity": 0.5, "character": "mira"}}))
        assert (await wait_for_type(ws, "directives", reply_to="a2"))["directives"][0]["action"] == "wave"


# -- speech and persona-to-persona exchanges -------------------------------------------------

def _llm_app(calls: list) -> web.Application:
    """An OpenAI-compatible endpoint that plays a chatty model: each persona hands the word to
    the other ("Bjorn, your turn!"), so only the scene's exchange limit ends the talk."""

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        system = body["messages"][0]["content"]
        speaker = "Bjorn" if system.startswith("You are Bjorn") else "Mira"
        other = "Mira" if speaker == "Bjorn" else "Bjorn"
        assert f"You share this scene with {other}" in system  # the group context reaches the LLM
        calls.append(speaker)
        answer = {"actions": [], "expression": "smile", "reply": f"{other}, your turn!"}
        return web.json_response({"id": "scene-test", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": json.dumps(answer)}, "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


def _service_with_llm(base_url: str):
    """The saved preview workflow with its interpreter switched to the `openai` backend."""
    workflow = load_workflow(WORKFLOW, NODE_CLASS_MAPPINGS)
    for node in workflow.values():
        if node["class_type"] == "PersonaInterpreter":
            node["inputs"].update(backend="openai", options=f"base_url={base_url}\ntimeout=10\nexamples=false")
    return PersonaService(WorkflowGraph(workflow, NODE_CLASS_MAPPINGS), ServerConfig(resume_grace_s=5.0))


async def _collect_until(ws, until, seconds: float = 40.0):
    audio, messages = [], []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not until(audio, messages):
        data = await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time()))
        if isinstance(data, bytes):
            kind, _, pts, payload = parse_media_frame(data)
            if kind == MEDIA_AUDIO:
                audio.append((pts, payload))
        else:
            messages.append(json.loads(data))
    return audio, messages


def _seconds(audio) -> float:
    return sum(len(p) // 2 for _, p in audio) / STREAM_RATE


async def test_two_voices_take_turns_and_a_persona_to_persona_exchange_stops_at_the_limit():
    """Mira is asked to greet Bjorn; every answer hands the word back (a chatty LLM), and the
    scene stops after `max_exchanges` (2) hand-overs. The three lines are spoken one after
    another on the one audio track, each in its speaker's voice, and no two ever overlap."""
    calls: list = []
    runner = web.AppRunner(_llm_app(calls))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    llm = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    service = await asyncio.to_thread(_service_with_llm, llm)
    try:
        async with running(service) as server, connect(server) as ws:
            await hello(ws, scene=["mira", "bjorn"])
            await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "Mira, say hello to Bjorn"}))
            session = next(iter(service.sessions.values()))
            voices = session.speech.voices
            assert voices["mira"] != voices["bjorn"]  # each card's own voice
            lines = [("mira", "Bjorn, your turn!"), ("bjorn", "Mira, your turn!"), ("mira", "Bjorn, your turn!")]
            expected = sum(spoken_seconds(voices[who], text) for who, text in lines)
            audio, messages = await _collect_until(ws, lambda a, m: _seconds(a) >= expected - 0.05)
            windows = list(session.speech._speakers)  # who the renderer was told speaks when
            # The turn lane takes one message at a time: c2's answer comes after all of c1's.
            await ws.send(json.dumps({"type": "chat", "id": "c2", "text": "Bjorn, nod"}))
            _, later = await _collect_until(
                ws, lambda a, m: any(x["type"] == "directives" and x["reply_to"] == "c2" for x in m))
            messages += later
        assert calls[:3] == ["Mira", "Bjorn", "Mira"]  # each asked with its own card
        c1 = [(m["character"], m["text"]) for m in messages if m["type"] == "reply" and m["reply_to"] == "c1"]
        assert c1 == lines  # the reply, then two hand-overs: the limit stopped the third
        first_c2 = next(i for i, m in enumerate(messages) if m.get("reply_to") == "c2")
        assert all(m.get("reply_to") != "c1" for m in messages[first_c2:])
        # one line after another: packets never overlap, and all three lines were heard in
        # their own voices (with the lead's voice for all, the length would be this instead)
        for (pts_a, pay_a), (pts_b, _) in zip(audio, audio[1:], strict=False):
            assert pts_b >= pts_a + len(pay_a) // 2 * 1000 // STREAM_RATE - 1, (pts_a, pts_b)
        one_voice = sum(spoken_seconds(voices["mira"], text) for _, text in lines)
        heard = _seconds(audio)
        assert abs(heard - expected) < abs(heard - one_voice), (heard, expected, one_voice)
        # the speaker windows the renderer got: Mira, Bjorn, Mira, back to back
        assert [who for _, _, who in windows] == ["mira", "bjorn", "mira"]
        assert all(b[0] >= a[1] for a, b in zip(windows, windows[1:], strict=False))
        # never both talking at once, by the `state` messages
        talking: dict[str, bool] = {}
        for m in messages:
            if m["type"] == "state" and "character" in m["state"]:
                talking[m["state"]["character"]] = m["state"]["speaking"]
                assert sum(talking.values()) <= 1, talking
        assert {"mira", "bjorn"} <= {m["state"]["character"] for m in messages
                                     if m["type"] == "state" and m["state"].get("speaking")}
    finally:
        service.pool.shutdown(wait=True)
        await runner.cleanup()
        from comfyui_persona.nodes import conversation_nodes

        for key in [k for k in conversation_nodes._INTERPRETERS if llm in k]:  # the node caches one per options
            conversation_nodes._INTERPRETERS.pop(key).close()


async def test_a_scene_records_to_an_mp4_with_both_characters_and_both_voices(tmp_path):
    import aiohttp
    import av
    import numpy as np

    from comfyui_persona.persona.library import PersonaLibrary
    from server_harness import make_service

    service = await asyncio.to_thread(make_service, resume_grace_s=5.0, recordings_dir=str(tmp_path / "rec"))
    try:
        async with running(service) as server, connect(server) as ws, aiohttp.ClientSession() as http:
            await hello(ws, scene=["mira", "bjorn"])
            await ws.send(json.dumps({"type": "record", "id": "r1", "on": True}))
            assert (await wait_for_type(ws, "recording", reply_to="r1"))["on"] is True
            await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "everyone clap"}))
            session = next(iter(service.sessions.values()))

            def both_heard(audio, messages) -> bool:
                said = [x for x in messages if x["type"] == "reply"]
                return len(said) == 2 and _seconds(audio) >= sum(
                    spoken_seconds(session.speech.voices[x["character"]], x["text"]) for x in said) - 0.05

            audio, messages = await _collect_until(ws, both_heard)
            lines = [(m["character"], m["text"]) for m in messages if m["type"] == "reply"]
            await ws.send(json.dumps({"type": "record", "id": "r2", "on": False}))
            stopped = await wait_for_type(ws, "recording", reply_to="r2", timeout=20)
            async with http.get(server.http_url + stopped["url"]) as response:
                assert response.status == 200
                data = await response.read()
    finally:
        service.pool.shutdown(wait=True)
    assert [who for who, _ in lines] == ["mira", "bjorn"]
    path = tmp_path / "scene.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert len(pictures) == stopped["frames"]
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.005  # speech, not silence
    library = PersonaLibrary.default()
    last = pictures[-1].astype(int)
    half = last.shape[1] // 2
    for who, part in (("mira", last[:, :half]), ("bjorn", last[:, half:])):  # each on their side
        hex_colour = library.get(who).appearance.outfit_colour
        outfit = np.array([int(hex_colour[k:k + 2], 16) for k in (1, 3, 5)])
        assert (np.abs(part - outfit).max(axis=-1) < 40).sum() > 200, who
