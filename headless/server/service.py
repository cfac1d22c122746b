"""The persona service: sessions, the `/persona/ws` handler, `/health`, `/metrics`, the page.

Handlers are written once and added to any aiohttp router by `add_routes` (an
`app.router` here, ComfyUI's `PromptServer.instance.routes` there), so the headless
server and the ComfyUI mount never diverge. Collaborators are passed in (house rule 9):
the workflow graph, the session store, the persona library.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hmac
import json
import logging
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from ...nodes.runtime import SessionStore
from ...persona.card import ID_RE
from ...video.voice.base import STREAM_RATE
from ..runner import NodeExecutionError, WorkflowError, WorkflowGraph
from ..runner.hosts import RunnerHosts, SessionHosts
from .config import ServerConfig, data_dir
from .connection import Connection
from .context import SessionContext
from .conversations import Checkpointer, ConversationStore, FileConversationStore
from .encoder import make_encoder
from .gallery import GalleryRoutes
from .guard import AccessPolicy, Route, guarded
from .limits import ConnectionGate, FailureLimiter, OpenSockets, RateWindow, peer_address
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
    Resume,
    WebRTCCandidate,
    WebRTCClose,
    WebRTCOffer,
    WebRTCPlayout,
    error_message,
    frame_too_large,
    parse,
)
from .recording import RecordingDesk
from .session import ViewerSession
from .site import gated_app
from .webrtc import WebRTCDesk

log = logging.getLogger("comfyui_persona.serve")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class PersonaService:
    """Owns the sessions of one server (or one ComfyUI process)."""

    def __init__(
        self,
        hosts: SessionHosts | WorkflowGraph,
        config: ServerConfig | None = None,
        store: SessionStore | None = None,
        library: Any = None,
        conversations: ConversationStore | None = None,
    ) -> None:
        """`hosts` runs the sessions' workflows (`RunnerHosts` headless, `PromptHosts` through
        ComfyUI's executor); a `WorkflowGraph` means the pack's own executor on it.
        `conversations`: where sessions are saved (default: files, when `keep_conversations`)."""
        config = config or ServerConfig()
        if isinstance(hosts, WorkflowGraph):
            hosts = RunnerHosts(hosts, config.cache_policy)
        self.hosts = hosts
        self.config = config
        self.store = store if store is not None else SessionStore()  # not `or`: an empty store is falsy
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
        cfg = self.config
        self.recordings = RecordingDesk(
            Path(cfg.recordings_dir) if cfg.recordings_dir else data_dir("recordings"),
            max_days=cfg.recordings_max_days, max_mb=cfg.recordings_max_mb,
            min_free_mb=cfg.recordings_min_free_mb, max_minutes=cfg.recording_max_minutes,
            on_started=self._recording_started,
        )
        self.context = SessionContext(cfg, self.metrics, self.pool, self.speech_pool, self.encoder, self.recordings, self)
        if conversations is None and cfg.keep_conversations:
            conversations = FileConversationStore(
                Path(cfg.conversations_dir) if cfg.conversations_dir else data_dir("conversations"),
                max_sessions=cfg.conversations_max, max_age_s=cfg.conversations_max_days * 86400.0,
            )
        self.checkpointer = Checkpointer(conversations) if conversations is not None else None
        self.webrtc = WebRTCDesk(cfg, STREAM_RATE, self._error)  # 1.1: media over WebRTC for clients that offer
        self.gallery = GalleryRoutes(self.library, self.pool, self.config, self.recordings)
        self.default_persona = hosts.default_persona
        self.default_scene = tuple(getattr(hosts, "default_scene", ()))  # the workflow's cast, if it has one
        self._starting = 0
        self._starting_by_peer: collections.Counter[str] = collections.Counter()
        #: Session ids being restored or ended, with how many wait: one at a time per id (`_holding`).
        self._id_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # Headless only (ComfyUI owns its sockets): socket caps and the idle timeout.
        self.gate = ConnectionGate(cfg.max_connections, cfg.max_connections_per_ip, cfg.idle_timeout_s)
        self.sockets = OpenSockets()  # chat WebSockets, both hosts
        self.token_failures = FailureLimiter()
        self.closing = False
        self._ending: set[asyncio.Task] = set()
        if not hosts.accepts("chat"):
            raise WorkflowError("the workflow has no node that takes chat text (add a PersonaConversationTurn)")

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

    async def open_session(self, hello: Hello, connection: Connection,
                           session_id: str | None = None) -> tuple[ViewerSession, bool]:
        """Resume the named session (held here, or saved: after a restart, or from a cluster
        replica that died) or start a new one; raises ProtocolError (busy, unknown_persona).

        `session_id`: the id a new session gets; default a fresh random one."""
        if self.checkpointer is not None and session_id is None and hello.session and hello.session not in self.sessions:
            async with self._holding(hello.session):  # then held here (resumed) or restored
                return await self._open_session(hello, connection, session_id)
        return await self._open_session(hello, connection, session_id)

    @contextlib.asynccontextmanager
    async def _holding(self, session_id: str):
        """One restore or ending of `session_id` at a time. Why: two hellos naming a saved
        conversation at once each restored it (two live sessions sharing one id and runtime,
        counted once against the limits), and a hello restoring a session still being ended
        got a stream the old one's closing then took away. Held only around a restore (the id
        not held here) and an ending, neither of which waits for another id's lock."""
        lock, users = self._id_locks.get(session_id, (asyncio.Lock(), 0))
        self._id_locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._id_locks[session_id]
            if users <= 1:
                del self._id_locks[session_id]
            else:
                self._id_locks[session_id] = (lock, users - 1)

    async def _open_session(self, hello: Hello, connection: Connection,
                            session_id: str | None) -> tuple[ViewerSession, bool]:
        checkpoint = None
        if self.checkpointer is not None and session_id is None and hello.session and hello.session not in self.sessions:
            checkpoint = await self.checkpointer.fetch(hello.session)
            wanted = hello.cast
            if checkpoint is not None and wanted is not None and tuple(checkpoint.cast or [checkpoint.persona_id]) != wanted:
                checkpoint = None  # another persona or cast: a new session, as for one held here
        if checkpoint is not None:
            hello = dataclasses.replace(hello, session=None, persona=None if checkpoint.cast else checkpoint.persona_id,
                                        scene=tuple(checkpoint.cast) or None)
            session, _ = await self._open_or_resume(hello, connection, checkpoint.session_id)
            self.checkpointer.restore(session, checkpoint)
            resumed = True
            log.info("session %s restored from its saved conversation (%d entries)", session.id[:8], len(checkpoint.history))
        else:
            session, resumed = await self._open_or_resume(hello, connection, session_id)
        if self.checkpointer is not None:
            self.checkpointer.watch(session)
            if not resumed:
                self.checkpointer.save(session)
        return session, resumed

    async def _open_or_resume(self, hello: Hello, connection: Connection,
                              session_id: str | None) -> tuple[ViewerSession, bool]:
        if hello.session and hello.session in self.sessions:
            session = self.sessions[hello.session]
            if hello.cast is None or hello.cast == session.cast_ids:  # else a new session, as after a restart
                previous = session.connection
                if previous is not None and previous is not connection and hello.takeover is False:
                    raise ProtocolError(
                        "session_in_use",
                        "this conversation is open on another connection (another tab?); "
                        "send hello with takeover: true to move it here, or without session for a new one",
                    )
                if previous is not None and previous is not connection:
                    session.detach(previous)
                    previous.send(error_message("invalid", "this session was resumed by another connection"))
                    asyncio.get_running_loop().create_task(_close_later(previous))
                session.attach(connection, hello.max_fps)
                self.metrics.sessions_resumed_total += 1
                log.info("session %s resumed", session.id[:8])
                return session, True
        if self.closing:
            raise ProtocolError("busy", "the server is stopping")
        await self._make_room(connection.peer)
        self._starting += 1
        self._starting_by_peer[connection.peer] += 1
        try:
            # 1.1: a scene, asked for or (no persona, no scene asked) the workflow's; its first persona leads
            scene = hello.scene or (self.default_scene if hello.persona is None else ())
            if scene:
                personas = [await self._load_persona(persona_id) for persona_id in scene]
            else:
                personas = [await self._load_persona(hello.persona or self.default_persona)]
            persona = personas[0]
            cast = tuple(personas) if scene else ()  # a scene of one is still a scene (1.1 fields)
            session_id = session_id or secrets.token_urlsafe(18)
            persona_ref = await loop_run(self.pool, self._persona_ref, persona.id)
            try:
                runner = self.hosts.new_host(self.store, session_id, persona_ref, hello.workflow, hello.comfy_client_id)
            except WorkflowError as exc:
                raise ProtocolError("invalid", f"field 'workflow': {exc}") from None
            speech = None
            if self.config.speech:
                voices = (persona, cast) if cast else (persona,)  # a scene: every cast member's voice
                speech = await loop_run(self.pool, _session_speech, *voices)
            runtime = self.store.get(session_id)
            runtime.cast = cast  # before any node runs: the nodes build a scene's parts from it
            session = ViewerSession(self.context, session_id, persona, runner, runtime, speech, hello.max_fps, cast)
            session.owner = connection.peer
            self.store.open(session_id, listener=session, speech=speech, streamed=True)
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self.pool, runner.start)
                slot = runtime.renderer
                if cast and slot is not None and not hasattr(slot.backend, "start_scene"):
                    raise ProtocolError("invalid", f"field 'scene': this server's renderer ({slot.backend.name}) "
                                                   "draws one persona; scenes need the preview or longlive renderer")
            except Exception as exc:
                await loop.run_in_executor(self.pool, runner.close)
                if isinstance(exc, NodeExecutionError):  # a missing model file, a node pack's error
                    log.warning("session %s did not start: %s", session_id[:8], exc)
                    raise ProtocolError("node_failed", f"the workflow did not start: {exc}") from None
                if isinstance(exc, WorkflowError):  # ComfyUI's validation, the first time it sees the graph
                    raise ProtocolError("invalid", f"field 'workflow': {exc}") from None
                raise
            if self.closing:  # the server began stopping while this one started: it ends here
                await loop.run_in_executor(self.pool, runner.close)
                raise ProtocolError("busy", "the server is stopping")
            session.render.keep_produced()
            self.sessions[session_id] = session
        finally:
            self._starting -= 1
            self._starting_by_peer[connection.peer] -= 1
            if self._starting_by_peer[connection.peer] <= 0:
                del self._starting_by_peer[connection.peer]
        session.attach(connection, hello.max_fps)
        session.start_tasks()
        self.metrics.sessions_started_total += 1
        log.info("session %s started: persona %s, backend %s", session_id[:8], persona.id, session.backend)
        return session, False

    async def _make_room(self, peer: str) -> None:
        """Free a slot for a new session from `peer`, or raise `busy`.

        A session waiting to be resumed (no viewer) holds its slot only while there is room:
        the server's or the address's limit reached, the one waiting longest gives way, so
        connecting and leaving cannot squat every slot (docs/security.md)."""
        cfg = self.config

        def waiting(owned_by: str | None = None) -> list[ViewerSession]:
            found = [s for s in self.sessions.values() if s.connection is None and (owned_by is None or s.owner == owned_by)]
            return sorted(found, key=lambda s: s.detached_at or 0.0)

        mine = [s for s in self.sessions.values() if s.owner == peer]
        if len(mine) + self._starting_by_peer[peer] >= cfg.max_sessions_per_ip:
            idle = waiting(peer)
            if not idle:
                self.metrics.refused_total["sessions_per_ip"] += 1
                raise ProtocolError(
                    "busy", f"this address already holds {cfg.max_sessions_per_ip} sessions; close one and try again"
                )
            await self.end_session(idle[0].id, "its slot went to a new session from the same address")
        while len(self.sessions) + self._starting >= cfg.max_sessions:
            idle = waiting()
            if not idle:
                self.metrics.refused_total["sessions"] += 1
                raise ProtocolError("busy", f"the server is at its limit of {cfg.max_sessions} sessions; try again later")
            await self.end_session(idle[0].id, "its slot went to a new session")

    async def end_session(self, session_id: str, why: str, *, instance: ViewerSession | None = None) -> bool:
        """End the session held under `session_id` (only if it is `instance`, when given: a
        grace timer must not end a session restored under the same id since); whether it did."""
        async with self._holding(session_id):  # a hello restoring it waits until it has ended
            session = self.sessions.get(session_id)
            if session is None or (instance is not None and session is not instance):
                return False
            del self.sessions[session_id]
            if self.checkpointer is not None:
                self.checkpointer.flush(session)
            await session.close()
            if self.checkpointer is not None:
                self.checkpointer.forget(session_id, drop=False)  # saved: a later hello may resume it
        s = session.stats
        log.info(
            "session %s ended (%s): %.0f s, %d frames sent, %d dropped",
            session_id[:8], why, time.monotonic() - session.started, s.frames_sent, s.dropped,
        )
        return True

    def expire_later(self, session_id: str, delay_s: float) -> asyncio.TimerHandle:
        """End a session `delay_s` from now (its resume grace); `close` waits for the ending."""
        loop = asyncio.get_running_loop()
        instance = self.sessions.get(session_id)

        def expire() -> None:
            task = loop.create_task(self.end_session(session_id, "expired", instance=instance))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

        return loop.call_later(delay_s, expire)

    async def close(self) -> None:
        self.closing = True  # sessions detached from here on are ended below, not given a grace
        for connection in list(self.connections):
            await connection.ws.close()
        await self.webrtc.close()
        for session_id in list(self.sessions):
            await self.end_session(session_id, "server stopping")
        if self._ending:  # sessions whose grace ran out just before: their runners close on the pool
            await asyncio.gather(*list(self._ending), return_exceptions=True)
        await asyncio.to_thread(self.speech_pool.shutdown, True)
        await asyncio.to_thread(self.pool.shutdown, True)  # waits for in-flight ticks, off the loop
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.close)  # the last saves on disk

    def _persona_ref(self, persona_id: str) -> str:
        """What the workflow's card loader is given: the id where the loader's own library
        (`PersonaLibrary.default()`, the one the canvas lists) finds the same card, else the
        card file's path (a server given another `--personas-dir`)."""
        from ...persona.library import PersonaLibrary, UnknownPersonaError

        path = self.library.path_of(persona_id)
        try:
            same = PersonaLibrary.default().path_of(persona_id) == path
        except UnknownPersonaError:
            same = False
        return persona_id if same else str(path)

    # -- recordings -------------------------------------------------------------------------

    def _recording_started(self) -> None:
        self.metrics.recordings_total += 1

    @property
    def recordings_dir(self) -> Path:
        return self.recordings.folder

    @recordings_dir.setter
    def recordings_dir(self, folder: Path) -> None:
        self.recordings.folder = Path(folder)

    @property
    def active_recordings(self) -> set[str]:
        return self.recordings.active

    # -- warm-up ----------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Run one throwaway session through a turn and a tick (loads the interpreter's models).

        Blocking: call before serving, or on a worker thread.
        """
        self.hosts.warm_up()

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
        text = self.metrics.render(len(self.sessions), len(attached), [s.stats.fps(now) for s in attached], self.gate)
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

    async def handle_upload_workflow(self, request: web.Request) -> web.Response:
        """`POST /persona/workflows` (JSON: a workflow in API or UI format) → 201 {id}, for
        `hello.workflow`; 400 {code: bad_workflow, message} naming every bad node."""
        if request.content_length is not None and request.content_length > MAX_WORKFLOW_BYTES:
            return _bad_workflow(f"the workflow is over the {MAX_WORKFLOW_BYTES // 2**20} MiB limit", 413)
        try:
            body = await asyncio.wait_for(_read_capped(request.content, MAX_WORKFLOW_BYTES), self.config.body_timeout_s)
        except asyncio.TimeoutError:
            return _bad_workflow(f"the upload did not arrive within {self.config.body_timeout_s:g} s")
        if len(body) > MAX_WORKFLOW_BYTES:
            return _bad_workflow(f"the workflow is over the {MAX_WORKFLOW_BYTES // 2**20} MiB limit", 413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return _bad_workflow("the workflow is not JSON")
        try:
            workflow_id = await loop_run(self.pool, self.hosts.register, data)
        except WorkflowError as exc:
            return _bad_workflow(str(exc))
        return web.json_response({"id": workflow_id}, status=201)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        peer = peer_address(request.transport)
        if self.sockets.full(peer, cfg.max_connections, cfg.max_connections_per_ip):
            self.metrics.refused_total["sockets"] += 1
            return web.json_response(
                {"code": "busy", "message": "too many connections; try again later"}, status=503,
                headers={"Retry-After": "5"},
            )
        # Pings are read here, not answered by aiohttp: they count against the rate limit.
        ws = web.WebSocketResponse(max_msg_size=cfg.hard_frame_limit, heartbeat=30.0, autoping=False)
        await ws.prepare(request)
        connection = Connection(ws, peer=peer)
        self.connections.add(connection)
        self.sockets.add(peer)
        self.metrics.connections_total += 1
        connection.start()
        try:
            await self._serve_connection(connection)
        finally:
            session = connection.session
            if session is not None:
                log.info("session %s: its socket closed (code %s)", session.id[:8], ws.close_code)
                session.detach(connection)
            await self.webrtc.forget(connection)
            await connection.close()
            self.connections.discard(connection)
            self.sockets.remove(peer)
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve_connection(self, connection: Connection) -> None:
        ws = connection.ws
        cfg = self.config
        window = RateWindow(cfg.messages_per_second)
        rate_error_sent_at = -1.0
        limit = cfg.messages_per_second
        loop = asyncio.get_running_loop()
        hello_by = loop.time() + cfg.hello_timeout_s
        while True:
            try:
                # Until `hello`, the connection holds a socket and nothing else: bounded in time.
                wait = None if connection.session is not None else max(0.0, hello_by - loop.time())
                msg = await ws.receive(timeout=wait)
            except asyncio.TimeoutError:
                self.metrics.refused_total["hello_timeout"] += 1
                # after a hello that failed (node_failed, unknown_persona) too: "no hello" misled
                self._error(connection, "not_ready", f"no session started within {cfg.hello_timeout_s:g} s of "
                            "connecting (send hello, again after one that failed); closing")
                await self._close_policy(connection, "hello timeout")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            self.metrics.messages_total += 1
            now = loop.time()
            if not window.hit(now):
                if window.flooding(now):
                    self.metrics.refused_total["flood"] += 1
                    await self._close_policy(connection, "message flood")
                    return
                if msg.type is WSMsgType.TEXT and now - rate_error_sent_at >= 1.0:
                    # one error per second, not one per flooded message
                    rate_error_sent_at = now
                    self._error(connection, "rate_limited", f"more than {limit} messages per second; slow down")
                continue
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
                continue
            if msg.type is WSMsgType.PONG:
                continue
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

    async def _close_policy(self, connection: Connection, why: str) -> None:
        """Close with 1008 (policy violation) after flushing what is queued."""
        await self._flush(connection)
        await connection.close()
        await connection.ws.close(code=1008, message=why.encode())

    async def _flush(self, connection: Connection) -> None:
        for _ in range(100):
            if not connection.outbox:
                break
            await asyncio.sleep(0.01)

    def _error(self, connection: Connection, code: str, message: str, reply_to: str | None = None) -> None:
        self.metrics.errors_total[code] += 1
        connection.send(error_message(code, message, reply_to))

    async def _close_fatal(self, connection: Connection, code: str) -> None:
        # Let the pump flush the error first, then close with a code that says why.
        await self._flush(connection)
        await connection.close()
        close_code = 4401 if code == "unauthorized" else 1013
        await connection.ws.close(code=close_code, message=code.encode())

    async def _dispatch(self, connection: Connection, message) -> bool:
        """Handle one parsed message; True when the connection must end."""
        session = connection.session
        if isinstance(message, Hello):
            if session is not None:
                raise ProtocolError("invalid", "hello was already received on this connection")
            self._check_token(message, connection.peer)
            if message.session is not None and not _SESSION_ID.match(message.session):
                raise ProtocolError("invalid", "field 'session' is not a session id this server issues")
            connection.max_fps = message.max_fps
            session, resumed = await self.open_session(message, connection)
            recordings = await loop_run(self.pool, self.recordings.of_session, session.id) if resumed else []
            ready = session.ready_message(resumed, [r.public() for r in recordings])
            self.webrtc.advertise(ready)
            connection.send(ready)
            session.go_live()
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
            performer = session.performer(directive.get("character"))
            if performer is None:
                raise ProtocolError("invalid", f"field 'directive.character': {directive['character']!r} is not in "
                                               f"this scene ({', '.join(session.cast_ids)})", message.id)
            vocabulary = performer.vocabulary()
            if directive["action"] not in vocabulary.action_names:
                raise ProtocolError(
                    "invalid", f"field 'directive.action': {directive['action']!r} is not an action of this persona", message.id
                )
            if directive["expression"] not in vocabulary.expression_names:
                raise ProtocolError(
                    "invalid", f"field 'directive.expression': {directive['expression']!r} is not an expression of this persona",
                    message.id,
                )
            if not session.accepts("action"):
                raise ProtocolError("invalid", "this workflow takes no manual directives (no PersonaDirective node)", message.id)
            fields = dict(directive)
            fields["duration_s"] = fields.get("duration_s") or 0.0
            if session.cast:  # always bound: a host keeps an input's last value
                fields["character"] = directive.get("character") or ""
            if not session.enqueue_turn("action", fields, message.id, directive=directive):
                raise ProtocolError("rate_limited", "too many messages waiting to be performed", message.id)
        elif isinstance(message, Reset):
            session.request_reset()
        elif isinstance(message, Resume):
            session.resume()
        elif isinstance(message, Record):
            await session.set_recording(message.on, message.id)
        elif isinstance(message, (WebRTCOffer, WebRTCCandidate, WebRTCClose, WebRTCPlayout)):
            await self.webrtc.handle(connection, message)
        return False

    def _check_token(self, hello: Hello, peer: str) -> None:
        expected = self.config.token
        if not expected:
            return
        now = asyncio.get_running_loop().time()
        if self.token_failures.blocked(peer, now):
            self.metrics.refused_total["token_failures"] += 1
            raise ProtocolError("unauthorized", "too many wrong tokens from this address; wait a minute")
        if hello.token is None or not hmac.compare_digest(hello.token.encode(), expected.encode()):
            self.token_failures.failed(peer, now)
            raise ProtocolError("unauthorized", "token missing or wrong")


#: The largest workflow upload (a saved graph of a few thousand nodes is a few hundred KB).
MAX_WORKFLOW_BYTES = 2 * 2**20


async def _read_capped(content, cap: int) -> bytes:
    """The whole body, or its first bytes past `cap` (then the caller refuses it). Not
    `content.read(cap + 1)`: that returns what has arrived so far, so a body that came in two
    TCP segments was cut short and refused as "not JSON"."""
    pieces, size = [], 0
    async for piece in content.iter_any():
        pieces.append(piece)
        size += len(piece)
        if size > cap:
            break
    return b"".join(pieces)


def _bad_workflow(message: str, status: int = 400) -> web.Response:
    return web.json_response({"code": "bad_workflow", "message": message}, status=status)


async def loop_run(pool, fn, *args):
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _default_library(config: ServerConfig):
    """The one persona library (built-ins, $PERSONA_DIR else the user's data dir); imports
    land in `personas_dir` when set, else in its first folder."""
    from ...persona.library import PersonaLibrary

    return PersonaLibrary.default(config.personas_dir)


def _session_speech(persona, cast=()):
    """The session's voice from its card: a voice the engine lists, by name, else the default
    voice with a warning (`checked_voice`); None (silent) only when no engine can run. A scene
    (`cast`) speaks each persona's lines with that persona's voice, on the one speech track."""
    from ...video.voice import VoiceError, checked_voice
    from .speech import SessionSpeech

    voices = {}
    for member in cast or (persona,):
        try:
            voice, problem = checked_voice(member.voice.model_dump())
        except VoiceError as exc:
            log.warning("persona %s speaks not: %s", member.id, exc)
            return None
        if problem:
            log.warning("persona %s: %s", member.id, problem)
        voices[member.id] = voice
    return SessionSpeech(voices[persona.id], voices=voices if cast else None)


async def _close_later(connection: Connection) -> None:
    await asyncio.sleep(0.05)
    await connection.close()
    await connection.ws.close(code=4000, message=b"resumed elsewhere")


#: Files of the page (headless/static/) served by name: nothing else under that folder is.
_STATIC_FILE = re.compile(r"^[a-z][a-z0-9_]*\.(js|css|png|ico|svg)$")
_CONTENT_TYPES = {"js": "text/javascript", "css": "text/css", "png": "image/png", "ico": "image/x-icon",
                  "svg": "image/svg+xml"}


async def handle_static(request: web.Request) -> web.StreamResponse:
    """A file of the page, by name (no paths, no listing): the same in both hosts, with the
    security headers (aiohttp's static route cannot add them)."""
    name = request.match_info["name"]
    if not _STATIC_FILE.match(name):
        raise web.HTTPNotFound(text="no such file")
    path = STATIC_DIR / name
    if not await asyncio.to_thread(path.is_file):
        raise web.HTTPNotFound(text="no such file")
    response = web.FileResponse(path, headers={"Cache-Control": "no-cache"})
    response.content_type = _CONTENT_TYPES[name.rsplit(".", 1)[1]]
    return response


def add_routes(router: Any, service: Any, policy: AccessPolicy, *, root_pages: bool = True) -> None:
    """Add the persona routes to `router`: an aiohttp `UrlDispatcher` or a `RouteTableDef`.

    Always under `/persona/` (ws, health, metrics, page, static); with `root_pages` also
    `/`, `/health` and `/metrics` (the headless server owns its root; ComfyUI does not).
    Every handler runs behind `policy` (guard.py: Host, Origin, token, headers), in both hosts.
    """
    gets = [
        ("/persona/ws", service.handle_ws, Route.SOCKET),
        ("/persona/health", service.handle_health, Route.HEALTH),
        ("/persona/metrics", service.handle_metrics, Route.READ),
        ("/persona/", service.handle_page, Route.PAGE),
        ("/persona/static/{name}", handle_static, Route.PAGE),
        ("/persona/personas", service.handle_personas, Route.READ),
        ("/persona/personas/{id}/portrait.png", service.handle_portrait, Route.READ),
        ("/persona/recordings/{token}.mp4", service.handle_recording, Route.READ),
    ]
    posts = [("/persona/personas", service.handle_import_card, Route.WRITE),
             ("/persona/workflows", service.handle_upload_workflow, Route.WRITE)]
    if root_pages:
        gets += [("/", service.handle_page, Route.PAGE), ("/health", service.handle_health, Route.HEALTH),
                 ("/metrics", service.handle_metrics, Route.READ)]
    for method, table in (("get", gets), ("post", posts)):
        for path, handler, route in table:
            checked = guarded(handler, route, policy)
            if hasattr(router, "add_get"):  # a UrlDispatcher (headless)
                getattr(router, f"add_{method}")(path, checked)
            else:  # a RouteTableDef (ComfyUI's PromptServer.routes)
                getattr(router, method)(path)(checked)


def policy_for(config: ServerConfig) -> AccessPolicy:
    return AccessPolicy(config.token, config.allowed_origins, config.allowed_hosts)


def create_app(service: PersonaService) -> web.Application:
    """A standalone app serving `service` (`site.gated_app`: security headers, the idle
    gate); closing the app closes the sessions. Serve it with `site.start_server`."""
    app = gated_app(service.gate)
    add_routes(app.router, service, policy_for(service.config))

    async def on_shutdown(app: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(on_shutdown)
    return app
