"""PROTOCOL.md conformance, with a plain `websockets` client against the real server on port 0.

Every client message type, every server message type and every error code in PROTOCOL.md
is exercised here; `test_every_type_and_code_in_protocol_md_is_covered` reads the
document itself, so a new type or code added there fails until a test covers it.
"""

import asyncio
import json
import re

import pytest
import websockets
from blockbuster import blockbuster_ctx

from comfyui_persona.headless.runner import WorkflowGraph, load_workflow
from comfyui_persona.headless.server import PersonaService, ServerConfig
from comfyui_persona.headless.server.protocol import MEDIA_AUDIO, MEDIA_JPEG, parse_media_frame
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.conversation_nodes import PersonaInterpreter
from paths import REPO
from server_harness import (
    TIMEOUT,
    hello,
    make_service,
    next_frame,
    recv_json,
    running,
    service_fixtures,
    settle,
    wait_for_type,
)

PROTOCOL_MD = REPO / "docs" / "contracts" / "PROTOCOL.md"
COVERED_TYPES = {"hello", "chat", "action", "reset", "ping", "record", "resume", "ready", "directives", "reply", "state",
                 "metrics", "error", "pong", "recording"}
COVERED_CODES = {
    "bad_json", "unknown_type", "invalid", "too_large", "not_ready", "unknown_persona",
    "unauthorized", "rate_limited", "busy", "internal",
    "interrupted",  # a host that pauses: ComfyUI's queue (tests/test_comfyui_native.py)
    "session_in_use",  # hello with takeover: false (tests/test_session_takeover_history.py)
    "bad_offer", "webrtc_unavailable", "webrtc_failed",  # WebRTC signalling (tests/test_webrtc.py)
    "node_failed",  # at hello: tests/test_comfyui_bad_input.py
}


service, _warm = service_fixtures(resume_grace_s=5.0)


@pytest.fixture
def no_blocking():
    """Fail on blocking calls (file I/O, sleeps...) made on the event loop thread."""
    with blockbuster_ctx(["comfyui_persona"]) as guard:
        yield guard



def connect(server, **kwargs):
    return websockets.connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=5, max_size=None, **kwargs)


def test_every_type_and_code_in_protocol_md_is_covered():
    text = PROTOCOL_MD.read_text()
    types = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M))
    assert types - COVERED_CODES <= COVERED_TYPES, sorted(types - COVERED_CODES - COVERED_TYPES)
    codes = {t for t in types if t not in COVERED_TYPES}
    assert codes == COVERED_CODES


async def test_hello_gets_ready_with_session_persona_state_vocabulary_and_backend(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws, persona="mira", video={"format": "jpeg", "max_fps": 30})
        assert ready["type"] == "ready" and ready["protocol"] == 1
        assert isinstance(ready["session"], str) and len(ready["session"]) >= 16
        assert ready["persona"]["id"] == "mira" and ready["persona"]["name"] and "description" in ready["persona"]
        assert set(ready["state"]) == {"pose", "action", "expression", "activity", "speaking", "since_ms"}
        assert "wave" in ready["vocabulary"]["actions"] and "smile" in ready["vocabulary"]["expressions"]
        assert ready["backend"] == "preview"


async def test_binary_frames_are_jpeg_with_big_endian_header_and_increasing_index(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        frames = [parse_media_frame(await next_frame(ws)) for _ in range(5)]
    assert all(kind == MEDIA_JPEG and payload[:3] == b"\xff\xd8\xff" for kind, _, _, payload in frames)
    indexes = [index for _, index, _, _ in frames]
    pts = [p for _, _, p, _ in frames]
    assert indexes == sorted(indexes) and len(set(indexes)) == 5
    assert pts == sorted(pts)


async def test_chat_gets_directives_before_reply_then_state_and_a_frame_showing_it(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave at me"}))
        seen = []
        while not (seen and seen[-1]["type"] == "reply" and seen[-1]["done"]):
            seen.append(await recv_json(ws, skip=("metrics",)))
        kinds = [m["type"] for m in seen if m["type"] in ("directives", "reply")]
        assert kinds[0] == "directives"
        directives = next(m for m in seen if m["type"] == "directives")
        assert directives["reply_to"] == "c1" and directives["directives"][0]["action"] == "wave"
        replies = [m for m in seen if m["type"] == "reply"]
        assert all(m["reply_to"] == "c1" for m in replies) and replies[-1]["text"]
        assert [m["done"] for m in replies][-1] is True and all(m["done"] is False for m in replies[:-1])
        state = await wait_for_type(ws, "state", timeout=TIMEOUT)
        assert state["state"]["action"] == "wave" or any(
            m["type"] == "state" and m["state"]["action"] == "wave" for m in seen
        )
        metrics = await wait_for_type(ws, "metrics", timeout=5)
        assert set(metrics) == {"type", "fps", "latency_ms", "frames_sent", "dropped"}
        assert metrics["frames_sent"] > 0


async def test_directives_are_listed_as_they_will_be_performed(service, no_blocking):
    """PROTOCOL.md: `directives` holds the list "in the order they will be performed", i.e.
    after the state tracker: no stand while standing, a stand inserted before walking seated."""
    async with running(service) as server, connect(server) as ws:
        await hello(ws)

        async def chat(message_id: str, text: str) -> list[str]:
            await ws.send(json.dumps({"type": "chat", "id": message_id, "text": text}))
            while True:
                message = await recv_json(ws, skip=("metrics", "state", "reply"))
                if message["type"] == "directives" and message["reply_to"] == message_id:
                    return [d["action"] for d in message["directives"]]

        standing = await chat("c1", "stand up and wave")  # a stand carrying a face stays as an idle
        assert "stand" not in standing and standing[-1] == "wave"
        assert await chat("c2", "sit down") == ["sit"]
        # The tracker takes a plan on its next stream step, a moment after `directives` is sent;
        # until then an earlier state (the wave ending) may still arrive. Wait until seated (a
        # sit still under way is not yet a seated character, on a slow box least of all).
        while (await wait_for_type(ws, "state", timeout=TIMEOUT))["state"]["pose"] != "sitting":
            pass
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {"action": "sit", "expression": "neutral", "intensity": 0.5}}))
        message = await recv_json(ws, skip=("metrics", "state", "reply"))
        assert (message["type"], message["reply_to"], message["directives"]) == ("directives", "a1", [])
        assert await chat("c3", "walk around") == ["stand", "walk"]


async def test_action_bypasses_the_interpreter_and_metrics_report_its_latency(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        directive = {"action": "sit", "expression": "smile", "intensity": 0.7}
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": directive}))
        message = await recv_json(ws)
        assert message["type"] == "directives" and message["reply_to"] == "a1"
        assert message["directives"][0]["action"] == "sit"
        state = await wait_for_type(ws, "state")
        assert state["state"]["action"] == "sit"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while loop.time() < deadline:
            metrics = await wait_for_type(ws, "metrics")
            if metrics["latency_ms"] is not None:
                break
        assert 0 < metrics["latency_ms"] < 2000


async def test_superseded_actions_do_not_leave_latency_clocks_behind(service, no_blocking):
    # Actions sent back to back replace each other's plans before they are rendered: no frame
    # ever shows the superseded ones, so their start times must not pile up for the session's life.
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        session = next(iter(service.sessions.values()))
        names = ["sit", "stand", "nod", "wave", "bow", "dance", "shrug", "clap"]
        for i, name in enumerate(names):
            directive = {"action": name, "expression": "smile", "intensity": 0.5}
            await ws.send(json.dumps({"type": "action", "id": f"a{i}", "directive": directive}))
        last = len(names)  # turn numbers count from 1
        await wait_for_type(ws, "directives", reply_to=f"a{last - 1}")  # its clock started with this
        await settle(lambda: last not in session.frames.timed_turns())  # a frame showed the last action
        assert session.frames.timed_turns() == set()


async def test_reset_returns_to_idle_and_ping_gets_pong(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {"action": "dance", "expression": "excited", "intensity": 1}}))
        await wait_for_type(ws, "state", timeout=TIMEOUT)
        await ws.send(json.dumps({"type": "reset", "id": "r1"}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            state = (await wait_for_type(ws, "state", timeout=max(0.1, deadline - loop.time())))["state"]
            if state["action"] == "idle" and state["expression"] == "neutral":
                break
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert await wait_for_type(ws, "pong") == {"type": "pong", "id": "p1"}
        await ws.send(json.dumps({"type": "ping"}))
        assert (await wait_for_type(ws, "pong"))["id"] is None


async def test_hello_max_fps_caps_the_frame_rate(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws, video={"format": "jpeg", "max_fps": 6})
        assert ready["video"]["fps"] == 6
        first = parse_media_frame(await next_frame(ws))
        frames = [parse_media_frame(await next_frame(ws)) for _ in range(4)]
    gaps = [b[2] - a[2] for a, b in zip([first, *frames], frames, strict=False)]
    assert all(gap >= 1000 / 6 - 1 for gap in gaps), gaps  # on the stream's own clock (pts)


async def test_session_resumes_by_id_after_a_disconnect(service, no_blocking):
    async with running(service) as server:
        async with connect(server) as ws:
            first = await hello(ws)
        async with connect(server) as ws:
            again = await hello(ws, session=first["session"])
            assert again["type"] == "ready" and again["session"] == first["session"] and again["resumed"] is True
            await next_frame(ws)
        assert len(service.sessions) == 1


async def test_an_unknown_session_id_starts_a_new_session(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws, session="A" * 24)
        assert ready["type"] == "ready" and ready["session"] != "A" * 24 and ready["resumed"] is False


# -- errors -------------------------------------------------------------------------------------


async def _error(ws, payload) -> dict:
    await ws.send(payload if isinstance(payload, (str, bytes)) else json.dumps(payload))
    message = await recv_json(ws)
    assert message["type"] == "error", message
    return message


async def test_bad_json_unknown_type_and_not_ready_before_hello(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        assert (await _error(ws, "{not json"))["code"] == "bad_json"
        assert (await _error(ws, "[1, 2]"))["code"] == "bad_json"
        assert (await _error(ws, b"\x00\x01binary"))["code"] == "bad_json"
        unknown = await _error(ws, {"type": "dance", "id": "x1"})
        assert unknown["code"] == "unknown_type" and unknown["reply_to"] == "x1"
        not_ready = await _error(ws, {"type": "chat", "id": "c0", "text": "hi"})
        assert not_ready["code"] == "not_ready" and not_ready["reply_to"] == "c0"
        assert "fatal" not in not_ready
        assert (await hello(ws))["type"] == "ready"  # the connection stayed open


async def test_invalid_names_the_field(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        cases = [
            ({"type": "chat", "id": "c1"}, "text"),
            ({"type": "chat", "id": 5, "text": "hi"}, "id"),
            ({"type": "chat", "text": "hi"}, "id"),
            ({"type": "action", "id": "a1", "directive": {"action": "wave"}}, "directive.expression"),
            ({"type": "action", "id": "a2", "directive": {"action": "wave", "expression": "smile", "intensity": 3}}, "directive.intensity"),
            ({"type": "action", "id": "a3", "directive": {"action": "backflip", "expression": "smile", "intensity": 0.5}}, "directive.action"),
            ({"type": "action", "id": "a4", "directive": {"action": "wave", "expression": "smile", "intensity": 0.5, "x": 1}}, "directive.x"),
            ({"type": "reset"}, "id"),
            ({"type": "hello"}, "hello"),  # a second hello on the same connection
        ]
        for payload, field in cases:
            error = await _error(ws, payload)
            assert error["code"] == "invalid" and field in error["message"], (payload, error)
        with_id = await _error(ws, {"type": "action", "id": "a9", "directive": "wave"})
        assert with_id["reply_to"] == "a9"


async def test_a_lone_surrogate_is_invalid_and_the_session_goes_on(service, no_blocking):
    """`JSON.stringify` of a string cut inside an emoji escapes half a UTF-16 pair: valid JSON,
    not encodable as UTF-8. Before, such a chat was answered and silently stopped the session's
    conversation from being saved; in a hello's token it was an `internal` error."""
    async with running(service) as server, connect(server) as ws:
        before_hello = await _error(ws, '{"type": "hello", "token": "s3cr\\ud83c"}')
        assert before_hello["code"] == "invalid" and "surrogate" in before_hello["message"]
        await hello(ws)
        for raw, reply_to in [('{"type": "chat", "id": "c1", "text": "pizza \\ud83c"}', "c1"),
                              ('{"type": "chat", "id": "c\\udc00", "text": "hi"}', None),
                              ('{"type": "action", "id": "a1", "directive": {"\\ud800": 1}}', "a1")]:
            error = await _error(ws, raw)
            assert (error["code"], error["reply_to"]) == ("invalid", reply_to), (raw, error)
        await ws.send(json.dumps({"type": "chat", "id": "c2", "text": "pizza \U0001f355 ¿sí?"}))
        assert (await wait_for_type(ws, "reply"))["reply_to"] == "c2"


async def test_invalid_hello_fields(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        for payload, field in [
            ({"type": "hello", "video": {"format": "png"}}, "video.format"),
            ({"type": "hello", "video": {"max_fps": 0}}, "video.max_fps"),
            ({"type": "hello", "persona": 7}, "persona"),
            ({"type": "hello", "session": "../../etc"}, "session"),
        ]:
            error = await _error(ws, payload)
            assert error["code"] == "invalid" and field in error["message"]


async def test_too_large_frames_and_texts_keep_the_connection(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        big = json.dumps({"type": "chat", "id": "c1", "text": "x" * (70 * 1024)})
        assert (await _error(ws, big))["code"] == "too_large"
        long_text = await _error(ws, {"type": "chat", "id": "c2", "text": "y" * 4001})
        assert long_text["code"] == "too_large" and long_text["reply_to"] == "c2"
        await ws.send(json.dumps({"type": "ping", "id": "still"}))
        assert (await wait_for_type(ws, "pong"))["id"] == "still"


def test_the_browser_client_refuses_over_the_same_limit_as_the_server():
    """persona_client.js checks a chat's length before sending (so a page keeps the text): its
    limit is the server's."""
    from comfyui_persona.headless.server.protocol import MAX_TEXT_CHARS

    script = (REPO / "headless" / "static" / "persona_client.js").read_text()
    assert re.search(r"export const MAX_CHAT_CHARS = (\d+);", script).group(1) == str(MAX_TEXT_CHARS)


async def test_unknown_persona_keeps_the_connection(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        error = await _error(ws, {"type": "hello", "persona": "nobody-here"})
        assert error["code"] == "unknown_persona" and "fatal" not in error
        path_like = await _error(ws, {"type": "hello", "persona": "/etc/passwd.json"})
        assert path_like["code"] == "unknown_persona"
        assert (await hello(ws, persona="mira"))["persona"]["id"] == "mira"


async def test_rate_limited_when_flooding(no_blocking):
    service = make_service(messages_per_second=5)
    try:
        async with running(service) as server, connect(server) as ws:
            await hello(ws)
            for n in range(12):
                await ws.send(json.dumps({"type": "ping", "id": f"p{n}"}))
            codes = []
            pongs = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3
            while loop.time() < deadline and not codes:
                message = await recv_json(ws, skip=("metrics", "state"))
                if message["type"] == "error":
                    codes.append(message["code"])
                elif message["type"] == "pong":
                    pongs += 1
            assert codes == ["rate_limited"] and pongs <= 5
    finally:
        service.pool.shutdown(wait=True)


async def test_unauthorized_is_fatal_and_closes(no_blocking):
    service = make_service(token="s3cret")
    try:
        async with running(service) as server:
            async with connect(server) as ws:
                error = await _error(ws, {"type": "hello"})
                assert error["code"] == "unauthorized" and error["fatal"] is True
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), TIMEOUT)
            async with connect(server) as ws:
                assert (await _error(ws, {"type": "hello", "token": "wrong"}))["code"] == "unauthorized"
            async with connect(server) as ws:
                assert (await hello(ws, token="s3cret"))["type"] == "ready"
    finally:
        service.pool.shutdown(wait=True)


async def test_busy_is_fatal_when_the_session_limit_is_reached(no_blocking):
    service = make_service(max_sessions=1)
    try:
        async with running(service) as server, connect(server) as first:
            await hello(first)
            async with connect(server) as second:
                error = await _error(second, {"type": "hello"})
                assert error["code"] == "busy" and error["fatal"] is True
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(second.recv(), TIMEOUT)
            await first.send(json.dumps({"type": "ping", "id": "ok"}))
            assert (await wait_for_type(first, "pong"))["id"] == "ok"
    finally:
        service.pool.shutdown(wait=True)


class _BrokenInterpreter(PersonaInterpreter):
    """The real node, with a bug injected: what the server must do when a node fails."""

    def interpret(self, persona, turn, backend):
        if turn.turn:
            raise RuntimeError("injected interpreter bug")
        return super().interpret(persona, turn, backend)


@pytest.fixture
def broken_service():
    registry = dict(NODE_CLASS_MAPPINGS, PersonaInterpreter=_BrokenInterpreter)
    graph = WorkflowGraph(load_workflow(REPO / "workflows" / "api" / "persona_preview_chat_api.json", registry), registry)
    service = PersonaService(graph, ServerConfig())
    yield service
    service.pool.shutdown(wait=True)


async def test_a_failing_node_is_named_and_the_session_goes_on(broken_service, no_blocking):
    service = broken_service
    if True:
        async with running(service) as server, connect(server) as ws:
            await hello(ws)
            await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "wave"}))
            error = await wait_for_type(ws, "error")
            assert error["code"] == "node_failed" and error["reply_to"] == "c1"
            assert "(PersonaInterpreter)" in error["message"] and "injected interpreter bug" in error["message"]
            assert "fatal" not in error
            await next_frame(ws)
            await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {"action": "nod", "expression": "smile", "intensity": 0.5}}))
            assert (await wait_for_type(ws, "directives"))["reply_to"] == "a1"


# -- server extensions (docs/server.md): speech audio, `record` / `recording` ---------------


async def test_ready_names_the_audio_rate_and_speech_is_kind_2_pcm_on_the_frame_clock(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws)
        assert ready["audio_rate"] == 22050
        directive = {"action": "idle", "expression": "smile", "intensity": 0.5, "dialogue": "Hello there."}
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": directive}))
        audio, video = [], []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not audio or len(video) < 3:
            assert loop.time() < deadline, "no audio packet"
            data = await asyncio.wait_for(ws.recv(), TIMEOUT)
            if isinstance(data, bytes):
                kind, index, pts, payload = parse_media_frame(data)
                (audio if kind == MEDIA_AUDIO else video).append((index, pts, payload))
        index, pts, payload = audio[0]
        assert len(payload) % 2 == 0 and len(payload) > 0
        assert abs(pts - video[-1][1]) < 2000  # one clock: the audio is due near the frames


async def test_record_on_then_off_answers_recording_with_a_url(service, no_blocking, tmp_path):
    """Record is sent as the session is ready, before any frame has come (a viewer clicking
    Record as the page opens): it waits for the first frame instead of being refused."""
    service.recordings_dir = tmp_path
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        await ws.send(json.dumps({"type": "record", "id": "r1", "on": True}))
        started = await wait_for_type(ws, "recording")
        url = started.pop("url")  # announced at the start: a crash never orphans the file
        assert started == {"type": "recording", "reply_to": "r1", "on": True, "duration_ms": 0, "frames": 0}
        for _ in range(12):
            await next_frame(ws)
        await ws.send(json.dumps({"type": "record", "id": "r2", "on": False}))
        stopped = await wait_for_type(ws, "recording", timeout=20)
        assert set(stopped) == {"type", "reply_to", "on", "url", "duration_ms", "frames"}
        assert stopped["reply_to"] == "r2" and stopped["on"] is False and stopped["frames"] >= 10
        assert re.fullmatch(r"/persona/recordings/[A-Za-z0-9_-]{32}\.mp4", stopped["url"])
        assert stopped["url"] == url


async def test_invalid_record_messages_name_the_field(service, no_blocking):
    async with running(service) as server, connect(server) as ws:
        await hello(ws)
        for bad in ({"type": "record", "id": "r1"}, {"type": "record", "id": "r1", "on": "yes"}):
            await ws.send(json.dumps(bad))
            error = await wait_for_type(ws, "error")
            assert error["code"] == "invalid" and "'on'" in error["message"] and error["reply_to"] == "r1"
        await ws.send(json.dumps({"type": "record", "on": True}))
        error = await wait_for_type(ws, "error")
        assert error["code"] == "invalid" and "'id'" in error["message"]
        await ws.send(json.dumps({"type": "record", "id": "r2", "on": False}))
        error = await wait_for_type(ws, "error")
        assert error["code"] == "invalid" and error["reply_to"] == "r2" and "not recording" in error["message"]


async def test_resume_is_accepted_and_ready_lists_the_features(service, no_blocking):
    """`resume` on a stream that is not paused changes nothing (the pack's executor never
    pauses; ComfyUI's Cancel does: tests/test_comfyui_native.py)."""
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws)
        assert {"record", "resume", "workflows"} <= set(ready["features"])
        await ws.send(json.dumps({"type": "resume", "id": "r1"}))
        await ws.send(json.dumps({"type": "ping", "id": "p1"}))
        assert (await wait_for_type(ws, "pong"))["id"] == "p1"
        await next_frame(ws)
