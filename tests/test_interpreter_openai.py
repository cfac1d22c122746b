"""The `openai` backend against a real OpenAI-compatible HTTP server started in the test.

The server (aiohttp, port 0, in its own thread because the backend's client is
synchronous) implements `POST /v1/chat/completions`, checks the request the way a strict
server would (a json_schema response_format whose enums are the persona's vocabulary) and
answers according to the `model` name: a correct answer, an invalid one followed by a
correct one (repair), invalid twice (fallback), too slow (timeout), HTTP 500, an SSE stream,
or plain JSON to a streaming request.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from aiohttp import web

from comfyui_persona.persona.card import Persona
from comfyui_persona.persona.interpreter import Interpretation, InterpretRequest, Turn, get_interpreter

PERSONA = Persona(id="t", name="Tess", allowed_actions=("wave", "nod", "sit", "stand", "dance"))
#: How long the "stream-slow-reply" model pauses between its directives and its reply.
SLOW_REPLY_S = 0.6


def _answer_for(text: str) -> dict:
    """A plausible model: acts on a few words, otherwise chats."""
    text = text.lower()
    actions = []
    for word, action in (("stand", "stand"), ("wave", "wave"), ("dance", "dance"), ("nod", "nod")):
        if word in text and f"don't {word}" not in text:
            actions.append(
                {"action": action, "expression": "smile", "intensity": 0.9 if "excitedly" in text else 0.5}
            )
    if "backflip" in text:
        return {"reply": "A backflip? Not me. How about a dance?", "actions": [], "expression": "shy"}
    reply = "Here you go!" if actions else "Nice to chat with you."
    return {"reply": reply, "actions": actions, "expression": "smile" if actions else "neutral"}


def _completion(content: str) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }


def _make_app(log: list, inflight: list) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        inflight.append(1)
        try:
            return await _answer(request)
        finally:
            inflight.pop()

    async def _answer(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        log.append({"body": body, "auth": request.headers.get("Authorization")})
        model = body["model"]
        schema = body["response_format"]["json_schema"]["schema"]
        action_enum = schema["properties"]["actions"]["items"]["properties"]["action"]["enum"]
        if body["response_format"]["type"] != "json_schema" or "wave" not in action_enum:
            return web.json_response({"error": "bad response_format"}, status=400)
        user = body["messages"][-1]["content"]
        answer = _answer_for(user)
        if model == "auth" and request.headers.get("Authorization") != "Bearer s3cret":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        if model == "repair":
            repairing = "invalid" in user
            if not repairing:
                bad = {
                    "reply": "Backflip time!",
                    "actions": [{"action": "backflip", "expression": "smile", "intensity": 1}],
                    "expression": "smile",
                }
                return web.json_response(_completion(json.dumps(bad)))
            return web.json_response(_completion(json.dumps(_answer_for(body["messages"][-3]["content"]))))
        if model == "broken":
            return web.json_response(_completion("Sure! I will wave now :)"))
        if model == "slow":
            await asyncio.sleep(1.5)
        if model == "error":
            return web.json_response({"error": {"message": "model crashed"}}, status=500)
        # A schema-enforcing server writes the properties in the schema's order.
        ordered = {key: answer[key] for key in schema["properties"]}
        if body.get("stream") and model.startswith("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            text = json.dumps(answer if model == "stream-reply-first" else ordered)
            reply_at = text.index('"reply"')
            if model == "stream-cut":  # the connection drops in the middle of the reply
                text = text[: reply_at + 16]
            pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
            if model == "stream-slow-reply":  # the model "thinks" after `"reply": "`
                head = len('"reply": "') + reply_at
                pieces = [text[i : min(i + 7, head)] for i in range(0, head, 7)] + [None]
                pieces += [text[i : i + 7] for i in range(head, len(text), 7)]
            for piece in pieces:
                if piece is None:
                    await asyncio.sleep(SLOW_REPLY_S)
                    continue
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if model != "stream-cut":
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(_completion(json.dumps(ordered)))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.fixture(scope="module")
def server():
    log: list = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    info: dict = {"log": log, "inflight": []}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(_make_app(log, info["inflight"]), shutdown_timeout=0.5)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        info["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        info["runner"] = runner
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10), "test server did not start"
    yield info
    deadline = time.monotonic() + 5
    while info["inflight"] and time.monotonic() < deadline:  # the "slow" handler outlives its client
        time.sleep(0.05)
    asyncio.run_coroutine_threadsafe(info["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


_OPEN: list = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _OPEN:
        _OPEN.pop().close()


def make(server, model: str, **options):
    interp = get_interpreter(
        "openai", base_url=server["url"], model=model, timeout=options.pop("timeout", 5), **options
    )
    _OPEN.append(interp)
    return interp


def req(text: str, **kw) -> InterpretRequest:
    return InterpretRequest(text=text, persona=PERSONA, **kw)


def test_structured_answer_becomes_directives(server):
    result = make(server, "good").interpret(req("stand up and wave excitedly"))
    assert [d.action for d in result.directives] == ["stand", "wave"]
    assert result.directives[1].intensity == 0.9
    assert result.backend == "openai" and result.note == ""
    sent = server["log"][-1]["body"]
    schema = sent["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]["actions"]["items"]["properties"]["action"]["enum"]) == {
        "idle",
        "wave",
        "nod",
        "sit",
        "stand",
        "dance",
    }
    assert sent["messages"][0]["role"] == "system" and "Tess" in sent["messages"][0]["content"]


def test_history_is_sent_in_order(server):
    history = (Turn(role="user", text="hello"), Turn(role="persona", text="Hi there!"))
    make(server, "good").interpret(req("nod", history=history))
    messages = server["log"][-1]["body"]["messages"]
    assert messages[0]["role"] == "system"
    # worked format examples first (user/assistant pairs), then the history, then the utterance
    assert [(m["role"], m["content"]) for m in messages[-3:]] == [
        ("user", "hello"), ("assistant", "Hi there!"), ("user", "nod")
    ]
    assert [m["role"] for m in messages[1:-3]] == ["user", "assistant"] * ((len(messages) - 4) // 2)


def test_history_beyond_the_token_budget_is_dropped_oldest_first(server):
    history = tuple(
        Turn(role="user" if i % 2 == 0 else "persona", text=f"turn {i} " + "x" * 400) for i in range(20)
    )
    make(server, "good", history_tokens="300", examples="false").interpret(req("nod", history=history))
    messages = server["log"][-1]["body"]["messages"]
    kept = [m["content"].split()[1] for m in messages[1:-1]]
    assert kept == [str(i) for i in range(20 - len(kept), 20)]  # the newest turns, in order
    assert sum(len(m["content"]) for m in messages[1:-1]) <= 300 * 4


def test_expression_only_answer_gives_an_idle_directive(server):
    result = make(server, "good").interpret(req("do a backflip"))
    assert [(d.action, d.expression) for d in result.directives] == [("idle", "shy")]
    assert "Not me" in result.reply


def test_invalid_answer_is_repaired_once(server):
    before = len(server["log"])
    result = make(server, "repair").interpret(req("wave"))
    assert [d.action for d in result.directives] == ["wave"]
    assert len(server["log"]) - before == 2
    assert "repaired" in result.note and "backflip" in result.note


def test_invalid_twice_falls_back_to_embedded(server):
    before = len(server["log"])
    result = make(server, "broken").interpret(req("stand up and wave"))
    assert len(server["log"]) - before == 2
    assert result.backend == "openai->embedded"
    assert "not JSON" in result.note
    assert [d.action for d in result.directives] == ["stand", "wave"]


def test_timeout_falls_back_to_embedded(server):
    result = make(server, "slow", timeout=0.3).interpret(req("nod"))
    assert result.backend == "openai->embedded"
    assert "0.3 s" in result.note
    assert [d.action for d in result.directives] == ["nod"]


def test_server_error_falls_back_to_embedded(server):
    result = make(server, "error").interpret(req("dance"))
    assert result.backend == "openai->embedded" and "HTTP 500" in result.note
    assert [d.action for d in result.directives] == ["dance"]


def test_unreachable_server_falls_back(server):
    interp = get_interpreter("openai", base_url="http://127.0.0.1:9/v1", model="good", timeout=2)
    _OPEN.append(interp)
    result = interp.interpret(req("wave"))
    assert result.backend == "openai->embedded"


def test_api_key_is_sent_as_bearer_token(server, monkeypatch):
    monkeypatch.setenv("PERSONA_OPENAI_API_KEY", "s3cret")
    result = make(server, "auth").interpret(req("wave"))
    assert result.backend == "openai" and server["log"][-1]["auth"] == "Bearer s3cret"
    monkeypatch.delenv("PERSONA_OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert make(server, "auth").interpret(req("wave")).backend == "openai->embedded"


def test_schema_puts_directives_before_the_reply(server):
    make(server, "good").interpret(req("wave"))
    schema = server["log"][-1]["body"]["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["actions", "expression", "reply"]
    assert schema["required"] == ["actions", "expression", "reply"]


def test_stream_reply_yields_directives_then_text_then_the_interpretation(server):
    parts = list(make(server, "stream").stream_reply(req("wave")))
    assert isinstance(parts[0], list), f"the directive list must come first, got {parts[0]!r}"
    assert [d.action for d in parts[0]] == ["wave"]
    chunks = parts[1:-1]
    assert all(isinstance(p, str) for p in chunks), parts
    final = parts[-1]
    assert isinstance(final, Interpretation)
    assert len(chunks) >= 2, "the reply should arrive in several pieces"
    assert "".join(chunks) == final.reply == "Here you go!"
    assert final.directives == parts[0]


@pytest.mark.parametrize("model", ["stream", "stream-reply-first"])
def test_a_session_gets_the_reply_so_far_in_each_partial_event(server, model):
    """The backend yields pieces; the turn node's listener gets the text so far each time, as
    PROTOCOL.md says (before, each piece alone: the bubble showed one word at a time, and the
    speech lane, which speaks sentences as the text so far completes them, spoke one)."""
    from comfyui_persona.nodes.conversation_nodes import _stream_interpretation
    from comfyui_persona.nodes.runtime import SessionStore

    class Events:
        def __init__(self) -> None:
            self.seen: list = []

        def on_directives(self, turn, directives) -> None:
            self.seen.append(("directives", [d.action for d in directives]))

        def on_reply(self, turn, text, done) -> None:
            self.seen.append(("reply", text, done))

    events = Events()
    session = SessionStore().open("s", listener=events)
    final = _stream_interpretation(make(server, model), req("nod"), session, turn=1)
    replies = [e for e in events.seen if e[0] == "reply"]
    assert events.seen[0] == ("directives", ["nod"]) and final.reply == "Here you go!"
    assert len(replies) >= 3 and replies[-1] == ("reply", "Here you go!", True)
    texts = [text for _, text, _ in replies]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False)), texts
    assert texts[-2] == "Here you go!"


def test_directives_arrive_while_the_model_is_still_generating(server):
    """The list is handed on when the `reply` key is reached, not when the answer ends."""
    stream = make(server, "stream-slow-reply").stream_reply(req("stand up and wave"))
    start = time.monotonic()
    first = next(stream)
    first_at = time.monotonic() - start
    rest = list(stream)
    done_at = time.monotonic() - start
    assert [d.action for d in first] == ["stand", "wave"]
    assert done_at - first_at >= SLOW_REPLY_S * 0.8, (first_at, done_at)
    assert rest[-1].directives == first and rest[-1].reply == "Here you go!"


def test_a_reply_first_answer_gives_directives_only_at_the_end(server):
    parts = list(make(server, "stream-reply-first").stream_reply(req("nod")))
    assert not any(isinstance(p, list) for p in parts), "no early list when the reply comes first"
    assert isinstance(parts[0], str) and isinstance(parts[-1], Interpretation)
    assert [d.action for d in parts[-1].directives] == ["nod"]
    assert "".join(parts[:-1]) == parts[-1].reply == "Here you go!"


def test_an_answer_cut_after_its_directives_keeps_them(server):
    parts = list(make(server, "stream-cut").stream_reply(req("wave")))
    assert [d.action for d in parts[0]] == ["wave"]
    final = parts[-1]
    assert final.directives == parts[0], "directives already sent must not be contradicted"
    assert final.reply == "".join(p for p in parts if isinstance(p, str)) == "Here y"
    assert "broke off" in final.note and final.backend == "openai"


def test_stream_reply_handles_a_server_without_streaming(server):
    parts = list(make(server, "good").stream_reply(req("nod")))
    assert [d.action for d in parts[0]] == ["nod"]
    assert parts[1] == "Here you go!" and isinstance(parts[-1], Interpretation)
    assert parts[-1].directives == parts[0]


def test_the_chat_node_streams_text_right_after_the_directives(server):
    """H5's chat node forwards text at once when the backend yields its directives first."""
    from comfyui_persona.nodes.conversation_nodes import _stream_interpretation
    from comfyui_persona.nodes.runtime import CallbackListener, Session

    events: list[tuple[str, dict, float]] = []
    session = Session("s", listener=CallbackListener(lambda kind, payload: events.append((kind, payload, time.monotonic()))))
    final = _stream_interpretation(make(server, "stream-slow-reply"), req("wave"), session, turn=3)
    kinds = [kind for kind, _, _ in events]
    assert kinds[0] == "directives" and kinds.count("directives") == 1
    assert [d.action for d in events[0][1]["directives"]] == ["wave"]
    partial = [p for kind, p, _ in events if kind == "reply" and not p["done"]]
    assert len(partial) >= 2 and events[-1][1] == {"turn": 3, "text": "Here you go!", "done": True}
    # Sent as soon as known: the directives went out a model "pause" before the end.
    assert events[-1][2] - events[0][2] >= SLOW_REPLY_S * 0.8
    assert final.directives == events[0][1]["directives"]


def test_stream_reply_falls_back_on_error(server):
    parts = list(make(server, "error").stream_reply(req("nod")))
    assert parts[-1].backend == "openai->embedded"


def test_bad_base_url_is_a_clear_error():
    with pytest.raises(ValueError, match="base_url must start with http"):
        get_interpreter("openai", base_url="ftp://x")


def test_an_emoji_escaped_as_two_halves_streams_whole_wherever_the_chunks_split():
    """`json.dumps` writes 😀 as two escapes; each half was decoded alone, a lone surrogate that
    broke speech, the history and the saved conversation for the rest of the session."""
    from comfyui_persona.persona.interpreter.structured import ReplyExtractor
    from comfyui_persona.persona.text import well_formed

    answer = json.dumps({"actions": [], "expression": "smile", "reply": "Hola 😀 amigo \ud83d! \udc00 fin"})
    assert "\\ud83d\\ude00" in answer
    expected = "Hola 😀 amigo \ufffd! \ufffd fin"
    for split in range(1, len(answer)):
        extractor = ReplyExtractor()
        streamed = extractor.feed(answer[:split]) + extractor.feed(answer[split:])
        assert streamed == extractor.text == expected, split
    one_by_one = ReplyExtractor()
    assert "".join(one_by_one.feed(c) for c in answer) == expected
    assert well_formed(json.loads(answer)["reply"]) == expected
