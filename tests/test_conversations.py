"""Saved conversations: a session survives a server restart (headless/server/conversations.py).

Against the real server on port 0, twice over the same folder: what the first server saved
after each turn, the second restores for a `hello` naming the session. The file store's
bounds and its refusal of anything but a session id as a file name are checked directly.
"""

import asyncio
import json
import os
import time

import websockets

from comfyui_persona.headless.server.conversations import FileConversationStore, SessionCheckpoint
from server_harness import TIMEOUT, hello, make_service, recv_json, running, settle, wait_for_type


def connect(server):
    return websockets.connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=5, max_size=None)


async def _a_served_conversation(folder: str, **options) -> dict:
    """One server on `folder`: a chat until the character sits, then the server stops."""
    first = await asyncio.to_thread(make_service, conversations_dir=folder, **options)
    async with running(first) as server:
        return await _talk_until_seated(server)


async def _talk_until_seated(server) -> dict:
    async with connect(server) as ws:
        ready = await hello(ws)
        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please sit down"}))
        reply = await wait_for_type(ws, "reply", reply_to="c1", done=True)
        while (await wait_for_type(ws, "state"))["state"]["pose"] != "sitting":
            pass
    return {"session": ready["session"], "reply": reply["text"]}


async def test_a_restarted_server_resumes_the_conversation_where_it_was(tmp_path):
    folder = str(tmp_path / "conversations")
    said = await _a_served_conversation(folder)
    second = await asyncio.to_thread(make_service, conversations_dir=folder)
    async with running(second) as server, connect(server) as ws:
        ready = await hello(ws, session=said["session"])
        assert ready["resumed"] is True and ready["session"] == said["session"]
        assert [(e["role"], e["text"]) for e in ready["history"]] == [("user", "please sit down"),
                                                                     ("persona", said["reply"])]
        assert ready["state"]["pose"] == "sitting"
        await ws.send(json.dumps({"type": "chat", "id": "c2", "text": "stand up"}))
        assert [d["action"] for d in (await wait_for_type(ws, "directives", reply_to="c2"))["directives"]] == ["stand"]
        # What the interpreter remembers came back too (the conversation, not only the bubbles).
        conversation = second.sessions[said["session"]].runtime.conversation
        assert [t.text for t in conversation.history][:2] == ["please sit down", said["reply"]]


async def test_a_reply_cut_by_the_restart_is_restored_finished(tmp_path):
    """Before, a reply still streaming when the server stopped came back `done: false`, and the
    page showed it as arriving for ever."""
    folder = tmp_path / "conversations"
    said = await _a_served_conversation(str(folder))
    saved = folder / f"{said['session']}.json"
    checkpoint = json.loads(saved.read_text())
    checkpoint["history"][-1].update(text=said["reply"][:3], done=False)  # as saved mid-reply
    saved.write_text(json.dumps(checkpoint))
    second = await asyncio.to_thread(make_service, conversations_dir=str(folder))
    async with running(second) as server, connect(server) as ws:
        ready = await hello(ws, session=said["session"])
    assert ready["history"][-1] == {**ready["history"][-1], "text": said["reply"][:3], "done": True}


async def test_another_persona_or_saving_off_starts_a_new_conversation(tmp_path):
    folder = str(tmp_path / "conversations")
    said = await _a_served_conversation(folder)
    second = await asyncio.to_thread(make_service, conversations_dir=folder)
    async with running(second) as server, connect(server) as ws:
        ready = await hello(ws, session=said["session"], persona="bjorn")
        assert ready["resumed"] is False and ready["history"] == [] and ready["session"] != said["session"]

    off = str(tmp_path / "off")
    unsaved = await _a_served_conversation(off, keep_conversations=False)
    assert not os.path.exists(off)
    fourth = await asyncio.to_thread(make_service, conversations_dir=off)
    async with running(fourth) as server, connect(server) as ws:
        assert (await hello(ws, session=unsaved["session"]))["resumed"] is False


async def test_the_file_store_is_bounded_and_names_files_only_by_session_id(tmp_path):
    store = FileConversationStore(tmp_path / "c", max_sessions=3, max_age_s=3600)
    try:
        for i in range(60):
            store.put(SessionCheckpoint(session_id=f"session{i:04d}", persona_id="mira"))
        store.put(SessionCheckpoint(session_id="../../escape", persona_id="mira"))
        store.put(SessionCheckpoint(session_id="x" * 200, persona_id="mira"))
        store.flush()
        names = sorted(p.name for p in (tmp_path / "c").iterdir())
        assert names == ["session0057.json", "session0058.json", "session0059.json"]
        assert not (tmp_path / "escape.json").exists()
        assert await store.get("../../etc/passwd") is None

        (tmp_path / "c" / "damagedxx.json").write_text("{not json")
        assert await store.get("damagedxx") is None  # damaged: a new session, not a crash
        old = SessionCheckpoint(session_id="oldsession", persona_id="mira", saved_at=time.time() - 7200)
        store.put(old)
        store.flush()
        assert await store.get("oldsession") is None  # older than max_age_s
        kept = await store.get("session0059")
        assert kept is not None and kept.persona_id == "mira"
        store.drop("session0059")
        store.flush()
        assert await store.get("session0059") is None
    finally:
        store.close()


async def test_a_finished_reply_is_saved_at_once_whatever_the_save_interval(tmp_path):
    """State changes are saved at most once per `min_interval_s`; a finished reply is not held
    back (a failover in that second would lose the turn). With the interval at an hour, only a
    write at once can hold the reply."""
    service = await asyncio.to_thread(make_service, conversations_dir=str(tmp_path / "conversations"))
    service.checkpointer.min_interval_s = 3600.0
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws)
        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave"}))
        reply = await wait_for_type(ws, "reply", reply_to="c1", done=True)
        store = service.checkpointer.store
        for _ in range(200):  # the write is queued on the loop right after the reply event
            await asyncio.to_thread(store.flush)
            saved = await store.get(ready["session"])
            if saved is not None and ("persona", reply["text"]) in [tuple(t) for t in saved.conversation]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the reply was not saved: {saved}")


async def test_two_tabs_restoring_one_conversation_at_once_get_one_session(tmp_path):
    """After a restart, two connections name the same saved session at the same moment: one
    session is restored, the other connection is told it is open elsewhere, and it is one
    session against the limits (each restored its own before)."""
    folder = str(tmp_path / "conversations")
    said = await _a_served_conversation(folder)
    second = await asyncio.to_thread(make_service, conversations_dir=folder)
    async with running(second) as server, connect(server) as a, connect(server) as b:
        message = json.dumps({"type": "hello", "session": said["session"], "takeover": False})
        await asyncio.gather(a.send(message), b.send(message))
        answers = [await recv_json(ws, skip=("metrics", "state", "directives", "reply")) for ws in (a, b)]
        assert sorted(answer["type"] for answer in answers) == ["error", "ready"], answers
        assert next(x for x in answers if x["type"] == "error")["code"] == "session_in_use"
        assert list(second.sessions) == [said["session"]]


async def test_a_conversation_restored_while_it_is_still_being_ended_keeps_its_stream(tmp_path):
    """A session is being ended (its slot given away, its grace out) when its viewer comes
    back: the restore waits for the ending, then streams on a runtime of its own. Before, it
    started at once and the old session's closing then dropped the runtime it shared."""
    service = await asyncio.to_thread(make_service, conversations_dir=str(tmp_path / "conversations"))
    async with running(service) as server:
        async with connect(server) as ws:
            session_id = (await hello(ws))["session"]
        old = service.sessions[session_id]
        gate = asyncio.Event()
        close = old.close

        async def slow_close():
            await gate.wait()
            await close()

        old.close = slow_close
        ending = asyncio.ensure_future(service.end_session(session_id, "test: its slot went elsewhere"))
        async with connect(server) as ws:
            await ws.send(json.dumps({"type": "hello", "session": session_id}))
            # the hello is in and waits for the ending (held by end_session, waited on by the hello)
            await settle(lambda: service._id_locks.get(session_id, (None, 0))[1] >= 2)
            gate.set()
            await ending
            assert (await wait_for_type(ws, "ready"))["session"] == session_id
            frames = 0
            while frames < 5:
                frames += isinstance(await asyncio.wait_for(ws.recv(), TIMEOUT), bytes)
            assert service.store.get(session_id) is service.sessions[session_id].runtime
