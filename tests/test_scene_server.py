"""Scene sessions over the wire (protocol v1.1, issue 20): `hello.scene`, the cast in `ready`,
addressed directives, each character's state, bad input, and a v1 client that sees no
difference. Real server on port 0, the saved preview workflow, the embedded interpreter, the
built-in cards."""

from __future__ import annotations

import asyncio
import json

import websockets

from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame
from server_harness import TIMEOUT, hello, recv_json, running, service_fixtures, wait_for_type

service, _warm = service_fixtures(resume_grace_s=5.0, speech=False)


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
