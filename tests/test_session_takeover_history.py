"""Protocol 1.1 `hello.takeover` and `ready.history` against the real server (port 0, real
WebSocket clients): a second viewer asking with `takeover: false` is refused with
`session_in_use` and can start its own session on the same socket; `takeover: true` (and 1.0's
absent field) moves the session, closing the old socket with 4000; a resumed session's `ready`
carries the visible conversation in order, and the kept history is bounded; what a session
said while nobody watched reaches the viewer after `ready`, never before it.
"""

from __future__ import annotations

import json

import websockets

from comfyui_persona.headless.server.history import HISTORY_LIMIT, ConversationLog
from server_harness import TIMEOUT, hello, recv_json, running, service_fixtures, settle, wait_for_type

service, _warm = service_fixtures(resume_grace_s=5.0)


def connect(server):
    return websockets.connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=5, max_size=None)


async def test_takeover_false_is_refused_while_open_and_a_new_session_follows(service):
    async with running(service) as server, connect(server) as first, connect(server) as second:
        ready = await hello(first)
        refused = await hello(second, session=ready["session"], takeover=False)
        assert refused["type"] == "error" and refused["code"] == "session_in_use" and "fatal" not in refused
        # The socket stays open and takes a hello for a new session; the first keeps its own.
        own = await hello(second)
        assert own["type"] == "ready" and own["session"] != ready["session"] and own["resumed"] is False
        await first.send(json.dumps({"type": "ping", "id": "still-mine"}))
        assert (await wait_for_type(first, "pong"))["id"] == "still-mine"
        assert service.sessions[ready["session"]].connection is not None


async def test_takeover_false_resumes_a_session_nobody_has_open(service):
    async with running(service) as server:
        async with connect(server) as ws:
            ready = await hello(ws)
        async with connect(server) as ws:
            again = await hello(ws, session=ready["session"], takeover=False)
            assert again["type"] == "ready" and again["session"] == ready["session"] and again["resumed"] is True


async def test_takeover_true_moves_the_session_and_closes_the_old_socket_with_4000(service):
    async with running(service) as server, connect(server) as first, connect(server) as second:
        ready = await hello(first)
        moved = await hello(second, session=ready["session"], takeover=True)
        assert moved["type"] == "ready" and moved["session"] == ready["session"] and moved["resumed"] is True
        told = await wait_for_type(first, "error")
        assert "another connection" in told["message"]
        try:
            while True:
                await first.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4000


async def test_takeover_must_be_a_boolean(service):
    async with running(service) as server, connect(server) as ws:
        answer = await hello(ws, session="A" * 24, takeover="yes")
        assert answer["type"] == "error" and answer["code"] == "invalid" and "takeover" in answer["message"]


async def test_resumed_ready_carries_the_conversation_in_order(service):
    async with running(service) as server:
        async with connect(server) as ws:
            ready = await hello(ws)
            assert ready["history"] == []
            await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave at me"}))
            first = await wait_for_type(ws, "reply", reply_to="c1", done=True)
            await ws.send(json.dumps({"type": "action", "id": "a1",
                                      "directive": {"action": "nod", "expression": "neutral", "intensity": 0.7}}))
            await wait_for_type(ws, "directives", reply_to="a1")
            await ws.send(json.dumps({"type": "chat", "id": "c2", "text": "now smile"}))
            second = await wait_for_type(ws, "reply", reply_to="c2", done=True)
        async with connect(server) as ws:
            again = await hello(ws, session=ready["session"])
            assert again["resumed"] is True
            history = again["history"]
    roles = [(e["role"], e.get("id") or e.get("reply_to")) for e in history]
    assert roles == [("user", "c1"), ("persona", "c1"), ("user", "a1"), ("persona", "a1"), ("user", "c2"),
                     ("persona", "c2")]
    assert history[0]["text"] == "please wave at me" and history[4]["text"] == "now smile"
    assert history[1]["text"] == first["text"] and history[5]["text"] == second["text"]
    assert history[1]["done"] and any(d["action"] == "wave" for d in history[1]["directives"])
    assert history[2]["kind"] == "action" and history[2]["directives"][0]["action"] == "nod"
    assert history[3]["kind"] == "action" and history[3]["done"] and history[3]["directives"][0]["action"] == "nod"


async def test_a_new_session_after_an_unknown_id_has_no_history(service):
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws, session="B" * 24, takeover=True)
        assert ready["resumed"] is False and ready["history"] == []
        assert "history" in ready["features"] and "takeover" in ready["features"]
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_json(ws))["type"] == "pong"


def test_history_keeps_the_newest_entries_only():
    log = ConversationLog()
    for n in range(HISTORY_LIMIT):
        log.user(f"m{n}", "chat", f"hello {n}")
        log.reply(f"m{n}", f"answer {n}", True)
    public = log.public()
    assert len(public) == HISTORY_LIMIT
    assert public[0] == {"role": "user", "kind": "chat", "id": f"m{HISTORY_LIMIT // 2}", "text": f"hello {HISTORY_LIMIT // 2}"}
    assert public[-1]["reply_to"] == f"m{HISTORY_LIMIT - 1}" and public[-1]["text"] == f"answer {HISTORY_LIMIT - 1}"
    # A streamed reply updates its one entry instead of adding more.
    log.user("x", "chat", "stream please")
    log.reply("x", "par", False)
    log.reply("x", "partial then whole", True)
    assert [e["text"] for e in log.public()[-2:]] == ["stream please", "partial then whole"]


async def test_a_resumed_sessions_backlog_comes_after_ready_and_nothing_before_it(service):
    """The protocol's first message is `ready`: a reply made while the viewer was away waits
    for it (it used to be sent as the session attached, ahead of `ready`), and so do frames."""
    async with running(service) as server:
        async with connect(server) as ws:
            ready = await hello(ws)
            await ws.send(json.dumps({"type": "chat", "id": "away", "text": "please wave"}))
        session = service.sessions[ready["session"]]
        await settle(lambda: any(m.get("type") == "reply" and m.get("done") for m in session.backlog))
        async with connect(server) as ws:
            await ws.send(json.dumps({"type": "hello", "session": ready["session"]}))
            first = await ws.recv()
            assert not isinstance(first, bytes), "a frame came before ready"
            assert json.loads(first)["type"] == "ready" and json.loads(first)["resumed"] is True
            await wait_for_type(ws, "reply", reply_to="away", done=True)
