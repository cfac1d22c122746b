"""The persona service: sessions, the `/persona/ws` handler, `/health`, `/metrics`, the page.

Handlers are written once and added to any aiohttp router by `add_routes` (an
`app.router` here, ComfyUI's `PromptServer.instance.routes` there), so the headless
server and the ComfyUI mount never diverge. Collaborators are passed in (house rule 9):
the workflow graph, the session store, the persona library.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from ...nodes.session_store import SessionStore
from ...persona.card import ID_RE
from ..runner import StreamingRunner, WorkflowGraph, make_cache
from .config import ServerConfig, data_dir
from .encoder import make_encoder
from .gallery import GalleryRoutes
from .metrics import ServerMetrics
from .protocol import (
    PROTOCOL_VERSION,
    Action,
    Chat,
    Hello,
    Ping,
    ProtocolError,
    Record,
    Reset,
    error_message,
    frame_too_large,
    parse,
)
from .session import Connection, ViewerSession

log = logging.getLogger("comfyui_persona.serve")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class PersonaService:
    """Owns the sessions of one server (or one ComfyUI process)."""

    def __init__(
        self,
        graph: WorkflowGraph,
        config: ServerConfig | None = None,
        store: SessionStore | None = None,
        library: Any = None,
    ) -> None:
        self.graph = graph
        self.config = config or ServerConfig()
        self.store = store or SessionStore()
        if library is None:
            library = _default_library(self.config)
        self.library = library
        self.encoder = make_encoder(self.config.encoder)
        self.metrics = ServerMetrics()
        self.sessions: dict[str, ViewerSession] = {}
        self.connections: set[Connection] = set()
        self.pool = ThreadPoolExecutor(max_workers=max(4, 2 * self.config.max_sessions + 2), thread_name_prefix="persona")
        # Synthesis has its own threads: a long reply never holds back a render tick.
        self.speech_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="persona-tts")
        self.recordings_dir = Path(self.config.recordings_dir) if self.config.recordings_dir else data_dir("recordings")
        self.active_recordings: set[str] = set()
        self.gallery = GalleryRoutes(self)
        self.default_persona = self._default_persona()
        self._starting = 0
        if not graph.accepts("chat"):
            raise ValueError("the workflow has no node that takes chat text (add a PersonaConversationTurn)")

    def _default_persona(self) -> str:
        for node_id, names in self.graph.bindings.get("persona", []):
            value = self.graph.workflow[node_id]["inputs"].get(names[0])
            if isinstance(value, str):
                return value
        from ...persona.library import DEFAULT_PERSONA_ID

        return DEFAULT_PERSONA_ID

    # -- sessions ---------------------------------------------------------------------------

    async def _load_persona(self, persona_id: str):
        from ...persona.library import UnknownPersonaError

        if not ID_RE.match(persona_id):
            raise ProtocolError("unknown_persona", f"unknown persona {persona_id[:64]!r}")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self.library.get, persona_id)
        except UnknownPersonaError as exc:
            raise ProtocolError("unknown_persona", str(exc)) from None

    async def open_session(self, hello: Hello, connection: Connection) -> tuple[ViewerSession, bool]:
        """Resume the named session or start a new one; raises ProtocolError (busy, unknown_persona)."""
        if hello.session and hello.session in self.sessions:
            session = self.sessions[hello.session]
            if hello.persona is None or hello.persona == session.persona.id:
                previous = session.connection
                if previous is not None and previous is not connection:
                    session.detach(previous)
                    previous.send(error_message("invalid", "this session was resumed by another connection"))
                    asyncio.get_running_loop().create_task(_close_later(previous))
                session.attach(connection, hello.max_fps)
                self.metrics.sessions_resumed_total += 1
                log.info("session %s resumed", session.id[:8])
                return session, True
        if len(self.sessions) + self._starting >= self.config.max_sessions:
            raise ProtocolError("busy", f"the server is at its limit of {self.config.max_sessions} sessions; try again later")
        self._starting += 1
        try:
            persona = await self._load_persona(hello.persona or self.default_persona)
            session_id = secrets.token_urlsafe(18)
            persona_ref = await loop_run(self.pool, self._persona_ref, persona.id)
            runner = StreamingRunner(
                self.graph,
                self.store,
                session_id,
                cache=make_cache(self.config.cache_policy),
                inputs={"persona": persona_ref} if self.graph.accepts("persona") else None,
            )
            session = ViewerSession(self, session_id, persona, runner, hello.max_fps)
            self.store.open(session_id, emit=session.emit)
            if self.config.speech:
                session.speech = _session_speech(persona)
                if session.speech is not None:
                    self.store.get(session_id).resource("speech", lambda: session.speech)
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self.pool, runner.start)
            except Exception:
                await loop.run_in_executor(self.pool, runner.close)
                raise
            session.frames.extend(session._tick_frames)
            session._tick_frames = []
            self.sessions[session_id] = session
        finally:
            self._starting -= 1
        session.attach(connection, hello.max_fps)
        session.start_tasks()
        self.metrics.sessions_started_total += 1
        log.info("session %s started: persona %s, backend %s", session_id[:8], persona.id, session.backend)
        return session, False

    async def end_session(self, session_id: str, why: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        await session.close()
        s = session.stats
        log.info(
            "session %s ended (%s): %.0f s, %d frames sent, %d dropped",
            session_id[:8], why, time.monotonic() - session.started, s.frames_sent, s.dropped,
        )

    async def close(self) -> None:
        for connection in list(self.connections):
            await connection.ws.close()
        for session_id in list(self.sessions):
            await self.end_session(session_id, "server stopping")
        await asyncio.to_thread(self.speech_pool.shutdown, True)
        await asyncio.to_thread(self.pool.shutdown, True)  # waits for in-flight ticks, off the loop

    def _persona_ref(self, persona_id: str) -> str:
        """What the workflow's card loader is given: the id for a built-in, the card file's
        path for a user card (so a card imported through this server loads in the graph)."""
        from ...persona.library import BUILTIN_DIR

        path = self.library.path_of(persona_id)
        return persona_id if path.parent == BUILTIN_DIR else str(path)

    # -- recordings -------------------------------------------------------------------------

    def recording_started(self, recording) -> None:
        self.active_recordings.add(recording.token)
        self.metrics.recordings_total += 1

    def recording_finished(self, recording) -> None:
        self.active_recordings.discard(recording.token)

    # -- warm-up ----------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Run one throwaway session through a turn and a tick (loads the interpreter's models).

        Blocking: call before serving, or on a worker thread.
        """
        store = SessionStore()
        runner = StreamingRunner(self.graph, store, "warm-up", inputs={"persona": self.default_persona})
        try:
            runner.start()
            runner.turn("chat", "hello", 1)
            runner.tick()
        finally:
            runner.close()

    # -- HTTP handlers ----------------------------------------------------------------------

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "sessions": len(self.sessions),
                "max_sessions": self.config.max_sessions,
                "protocol": PROTOCOL_VERSION,
                "token_required": bool(self.config.token),
            }
        )

    async def handle_metrics(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        attached = [s for s in self.sessions.values() if s.connection is not None]
        text = self.metrics.render(len(self.sessions), len(attached), [s.stats.fps(now) for s in attached])
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"X-Format": "prometheus-0.0.4"})

    async def handle_page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    # Gallery, card import, recordings (gallery.py). `add_routes` takes only `handle_*`
    # attributes, which is what ComfyUI's lazy stand-in (headless/comfyui_routes.py) offers.

    async def handle_personas(self, request: web.Request) -> web.Response:
        return await self.gallery.list_personas(request)

    async def handle_portrait(self, request: web.Request) -> web.Response:
        return await self.gallery.portrait(request)

    async def handle_import_card(self, request: web.Request) -> web.Response:
        return await self.gallery.import_card(request)

    async def handle_recording(self, request: web.Request) -> web.StreamResponse:
        return await self.gallery.recording(request)

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.config.hard_frame_limit, heartbeat=30.0)
        await ws.prepare(request)
        connection = Connection(ws)
        self.connections.add(connection)
        self.metrics.connections_total += 1
        connection.start()
        try:
            await self._serve_connection(connection)
        finally:
            session = connection.session
            if session is not None:
                session.detach(connection)
            await connection.close()
            self.connections.discard(connection)
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve_connection(self, connection: Connection) -> None:
        ws = connection.ws
        window: list[float] = []
        rate_error_sent_at = -1.0
        limit = self.config.messages_per_second
        loop = asyncio.get_running_loop()
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            self.metrics.messages_total += 1
            now = loop.time()
            window[:] = [t for t in window if now - t < 1.0]
            if len(window) >= limit:
                if now - rate_error_sent_at >= 1.0:  # one error per second, not one per flooded message
                    rate_error_sent_at = now
                    self._error(connection, "rate_limited", f"more than {limit} messages per second; slow down")
                continue
            window.append(now)
            if msg.type is WSMsgType.BINARY:
                self._error(connection, "bad_json", "binary frames are not accepted from clients; send JSON text")
                continue
            if msg.type is not WSMsgType.TEXT:
                continue
            if frame_too_large(msg.data):
                self._error(connection, "too_large", "message is over the 64 KiB frame limit")
                continue
            try:
                message = parse(msg.data)
                if await self._dispatch(connection, message):
                    return
            except ProtocolError as exc:
                self._error(connection, exc.code, exc.message, exc.reply_to)
                if exc.fatal:
                    await self._close_fatal(connection, exc.code)
                    return
            except Exception as exc:  # a bug: say what failed, keep the session
                log.exception("handling a message failed")
                self._error(connection, "internal", f"handling the message failed: {type(exc).__name__}: {exc}")

    def _error(self, connection: Connection, code: str, message: str, reply_to: str | None = None) -> None:
        self.metrics.errors_total[code] += 1
        connection.send(error_message(code, message, reply_to))

    async def _close_fatal(self, connection: Connection, code: str) -> None:
        # Let the pump flush the error first, then close with a code that says why.
        for _ in range(100):
            if not connection.outbox:
                break
            await asyncio.sleep(0.01)
        await connection.close()
        close_code = 4401 if code == "unauthorized" else 1013
        await connection.ws.close(code=close_code, message=code.encode())

    async def _dispatch(self, connection: Connection, message) -> bool:
        """Handle one parsed message; True when the connection must end."""
        session = connection.session
        if isinstance(message, Hello):
            if session is not None:
                raise ProtocolError("invalid", "hello was already received on this connection")
            self._check_token(message)
            if message.session is not None and not _SESSION_ID.match(message.session):
                raise ProtocolError("invalid", "field 'session' is not a session id this server issues")
            connection.max_fps = message.max_fps
            session, resumed = await self.open_session(message, connection)
            connection.send(session.ready_message(resumed))
            return False
        if session is None:
            raise ProtocolError("not_ready", "send hello first", getattr(message, "id", None))
        if isinstance(message, Ping):
            connection.send({"type": "pong", "id": message.id})
        elif isinstance(message, Chat):
            if not message.text.strip():
                connection.send({"type": "directives", "reply_to": message.id, "directives": []})
                connection.send({"type": "reply", "reply_to": message.id, "text": "", "done": True})
            elif not session.enqueue_turn("chat", message.text, message.id):
                raise ProtocolError("rate_limited", "too many messages waiting to be interpreted", message.id)
        elif isinstance(message, Action):
            directive = message.directive
            vocabulary = session.persona.vocabulary()
            if directive["action"] not in vocabulary.action_names:
                raise ProtocolError(
                    "invalid", f"field 'directive.action': {directive['action']!r} is not an action of this persona", message.id
                )
            if directive["expression"] not in vocabulary.expression_names:
                raise ProtocolError(
                    "invalid", f"field 'directive.expression': {directive['expression']!r} is not an expression of this persona",
                    message.id,
                )
            if not self.graph.accepts("action"):
                raise ProtocolError("invalid", "this workflow takes no manual directives (no PersonaDirective node)", message.id)
            fields = dict(directive)
            fields["duration_s"] = fields.get("duration_s") or 0.0
            if not session.enqueue_turn("action", fields, message.id, directive=directive):
                raise ProtocolError("rate_limited", "too many messages waiting to be performed", message.id)
        elif isinstance(message, Reset):
            session.request_reset()
        elif isinstance(message, Record):
            await session.set_recording(message.on, message.id)
        return False

    def _check_token(self, hello: Hello) -> None:
        expected = self.config.token
        if not expected:
            return
        if hello.token is None or not hmac.compare_digest(hello.token.encode(), expected.encode()):
            raise ProtocolError("unauthorized", "token missing or wrong")


async def loop_run(pool, fn, *args):
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _default_library(config: ServerConfig):
    """The one persona library (built-ins, $PERSONA_DIR else the user's data dir); imports
    land in `personas_dir` when set, else in its first folder."""
    from ...persona.library import PersonaLibrary

    return PersonaLibrary.default(config.personas_dir)


def _session_speech(persona):
    """The session's voice from its card; None (silent) when the card's voice is unusable."""
    from ...video.voice import VoiceError, VoiceSpec
    from .speech import SessionSpeech

    try:
        return SessionSpeech(VoiceSpec.from_dict(persona.voice.model_dump()))
    except VoiceError as exc:
        log.warning("persona %s speaks not: %s", persona.id, exc)
        return None


async def _close_later(connection: Connection) -> None:
    await asyncio.sleep(0.05)
    await connection.close()
    await connection.ws.close(code=4000, message=b"resumed elsewhere")


def add_routes(router: Any, service: PersonaService, *, root_pages: bool = True) -> None:
    """Add the persona routes to `router`: an aiohttp `UrlDispatcher` or a `RouteTableDef`.

    Always under `/persona/` (ws, health, metrics, page, static); with `root_pages` also
    `/`, `/health` and `/metrics` (the headless server owns its root; ComfyUI does not).
    """
    routes = [
        ("/persona/ws", service.handle_ws),
        ("/persona/health", service.handle_health),
        ("/persona/metrics", service.handle_metrics),
        ("/persona/", service.handle_page),
        ("/persona/personas", service.handle_personas),
        ("/persona/personas/{id}/portrait.png", service.handle_portrait),
        ("/persona/recordings/{token}.mp4", service.handle_recording),
    ]
    posts = [("/persona/personas", service.handle_import_card)]
    if root_pages:
        routes += [("/", service.handle_page), ("/health", service.handle_health), ("/metrics", service.handle_metrics)]
    if hasattr(router, "add_get"):
        for path, handler in routes:
            router.add_get(path, handler)
        for path, handler in posts:
            router.add_post(path, handler)
        router.add_static("/persona/static/", STATIC_DIR, append_version=False)
    else:
        for path, handler in routes:
            router.get(path)(handler)
        for path, handler in posts:
            router.post(path)(handler)
        router.static("/persona/static/", STATIC_DIR)


def create_app(service: PersonaService) -> web.Application:
    """A standalone app serving `service`; closing the app closes the sessions."""
    app = web.Application()
    add_routes(app.router, service)

    async def on_shutdown(app: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(on_shutdown)
    return app
