"""One viewer session: the workflow host running it, its lanes, and the connection watching it.

The session is a composition of parts, each given only what it needs (`SessionContext`):
- `RenderLoop` (render_loop.py): one tick at a time while a viewer is attached and the frame
  queue is low; frames go into the `FrameQueue` (frames.py), which the connection's pump
  (connection.py) empties at the stream rate;
- `TurnLane` (turns.py): chat/action messages one at a time through the host's turn lane;
- `SpeechLane` (speech_lane.py): replies spoken, barge-in and reset cuts;
- `RecordingControl` (record_control.py): `record` on/off and the recording's input.

It is also the runtime session's `SessionListener` (nodes/runtime.py): node code tells it
what a run produced, on the worker thread that ran the node; everything but the chunk's
encoding is handed to the event loop.

A disconnect detaches the connection; the session waits `resume_grace_s` for a `hello`
naming it, then the owner ends it (`SessionLifecycle.expire_later`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ...video.voice.base import STREAM_RATE
from .connection import Connection
from .context import SessionContext
from .frames import FrameQueue
from .history import ConversationLog
from .protocol import PROTOCOL_VERSION, error_message
from .record_control import RECENT_AUDIO_MARGIN_MS, RecordingControl
from .render_loop import RenderLoop
from .speech_lane import SpeechLane
from .turns import TurnLane

if TYPE_CHECKING:
    from ...nodes.runtime import Session
    from .speech import SessionSpeech

log = logging.getLogger("comfyui_persona.serve")

__all__ = ["BACKLOG_LIMIT", "Connection", "ViewerSession", "WorkflowHost"]

#: JSON messages kept for a detached session (delivered on resume), oldest dropped.
BACKLOG_LIMIT = 256
#: What this server offers of protocol 1.1 (`ready.features`).
FEATURES = ("record", "resume", "workflows", "history", "takeover", "scenes")


class WorkflowHost(Protocol):
    """What runs a session's workflow (`StreamingRunner`, or ComfyUI's executor): each call
    blocks, so the session calls them on its worker pool."""

    def accepts(self, kind: str) -> bool:
        """Whether the workflow takes host values of `kind` (chat, action, persona)."""

    def turn(self, kind: str, value: Any, turn: int) -> Any: ...

    def tick(self) -> Any: ...

    def request_reset(self) -> None: ...

    def resume(self) -> None:
        """Go on after a pause (ComfyUI's Cancel); a host that never pauses does nothing."""

    def close(self) -> None: ...


class ViewerSession:
    """A session's host and lanes; survives reconnects for the resume grace."""

    def __init__(self, context: SessionContext, session_id: str, persona, host: WorkflowHost, runtime: Session,
                 speech: SessionSpeech | None, max_fps: int | None, cast: Sequence[Any] = ()) -> None:
        self.context = context
        self.id = session_id
        self.persona = persona
        #: 1.1: a scene's personas, left to right (the first is `persona`); empty: one persona.
        self.cast = tuple(cast)
        self.states: dict[str, dict] = {}  # a scene's last state per character
        self.host = host
        self.runtime = runtime
        self.loop = asyncio.get_running_loop()
        cfg = context.config
        self.started = time.monotonic()
        self.owner = "?"  # the address that created it (per-address session limit)
        self.detached_at: float | None = None  # loop time of the last detach, while waiting to be resumed
        self.connection: Connection | None = None
        self.backlog: collections.deque[dict] = collections.deque(maxlen=BACKLOG_LIMIT)
        self.state: dict | None = None
        self.history = ConversationLog()  # what the viewer saw: `ready.history` on resume
        self.closed = False
        self._max_fps = max_fps
        self._grace: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        self._ready_sent = False
        self._live = False  # `ready` went to the attached connection: messages go straight to it (`go_live`)

        self.frames = FrameQueue(cfg.frame_queue, context.metrics)
        self.render = RenderLoop(session_id, host.tick, self.frames, context.pool, context.encoder,
                                 cfg.jpeg_quality, self.error)
        self.turns = TurnLane(session_id, host.turn, self.frames, context.pool, self._send_turn, self.error)
        self.recorder = RecordingControl(session_id, context.recordings, context.pool, self.send, self.error,
                                         self._frame_info)
        self.speech = speech  # the session's voice (SessionSpeech), None when it does not speak
        self.speech_lane: SpeechLane | None = None
        if speech is not None:
            self.speech_lane = SpeechLane(session_id, speech, runtime, context.speech_pool, self._send_audio,
                                          self.recorder.audio_released, self.error)
            self.recorder.recent_audio.keep_ms = speech.ahead_ms + RECENT_AUDIO_MARGIN_MS
            self.turns.say = self.speech_lane.say
        self.turns.as_performed = self._as_performed
        self.render.after_tick = self.recorder.after_tick
        self.render.wake = self._wake

    # -- SessionListener: called by node code on worker threads --------------------------------

    def on_directives(self, turn: int, directives: Sequence[Any]) -> None:
        dumped = [d.model_dump(mode="json") for d in directives]
        self.loop.call_soon_threadsafe(self._directives, turn, dumped)

    def on_reply(self, turn: int, text: str, done: bool) -> None:
        self.loop.call_soon_threadsafe(self._reply, turn, text, done)

    def on_state(self, state: dict) -> None:
        self.loop.call_soon_threadsafe(self._state, state)

    def on_cast_reply(self, turn: int, character: str, text: str) -> None:
        """A scene's line by `character` (replies come one per speaker, in speaking order)."""
        self.loop.call_soon_threadsafe(self._cast_reply, turn, character, text)

    def on_chunk(self, frames: Any) -> None:
        self.render.encode(frames)
        self.recorder.push_chunk(frames)

    def _directives(self, turn: int, directives: list[dict]) -> None:
        if self.closed:
            return
        self.frames.directives_known(turn, self.loop.time())
        reply_to = self.turns.reply_to(turn)
        self.history.directives(reply_to, directives)
        self.send({"type": "directives", "reply_to": reply_to, "directives": directives})

    def _reply(self, turn: int, text: str, done: bool) -> None:
        if self.closed:
            return
        reply_to = self.turns.reply_to(turn)
        self.history.reply(reply_to, text, done)
        self.send({"type": "reply", "reply_to": reply_to, "text": text, "done": done})
        if self.speech_lane is not None:
            self.speech_lane.speak_streamed(turn, text, done)

    def _cast_reply(self, turn: int, character: str, text: str) -> None:
        if self.closed:
            return
        reply_to = self.turns.reply_to(turn)
        self.history.line(reply_to, character, text)
        self.send({"type": "reply", "reply_to": reply_to, "text": text, "done": True, "character": character})
        if self.speech_lane is not None:
            self.speech_lane.say(text, turn, character)  # queued behind the previous speaker's line

    def _state(self, state: dict) -> None:
        if self.closed:
            return
        if "character" in state:
            self.states[state["character"]] = state
            if state["character"] != self.persona.id:  # `state` stays the lead's
                if self._ready_sent:
                    self.send({"type": "state", "state": state})
                return
        self.state = state
        if self._ready_sent:
            self.send({"type": "state", "state": state})

    # -- outbound -----------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        if self.connection is not None and self._live:
            self.connection.send(message)
        else:
            self.backlog.append(message)

    def _send_turn(self, message: dict) -> None:
        """What the turn lane says itself (a manual action's directives and dialogue): kept in
        the history like the interpreter's answers."""
        if message["type"] == "directives":
            self.history.directives(message["reply_to"], message["directives"])
        elif message["type"] == "reply":
            self.history.reply(message["reply_to"], message["text"], message["done"])
        self.send(message)

    def error(self, code: str, message: str, reply_to: str | None = None) -> None:
        self.context.metrics.errors_total[code] += 1
        self.send(error_message(code, message, reply_to))

    def _send_audio(self, frames: list[bytes]) -> None:
        connection = self.connection
        if connection is None or not self._live or self.closed:
            return  # nobody listens: audio is not backlogged (its time passes)
        for data in frames:
            connection.send(data)
        self.context.metrics.audio_packets_total += len(frames)

    def _wake(self) -> None:
        if self.connection is not None:
            self.connection.wake.set()

    def _frame_info(self) -> tuple[tuple[int, int] | None, float]:
        shape = (self.speech.frame_shape if self.speech is not None else None) or self.render.frame_shape
        return shape, self.frames.fps

    def _as_performed(self, directive: dict) -> list[dict]:
        from ...persona.schema import ActionDirective

        planned = self.runtime.as_performed([ActionDirective.model_validate(directive)])
        return [d.model_dump(mode="json", exclude_none=True) for d in planned]

    # -- what the service asks ----------------------------------------------------------------

    @property
    def cast_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.cast) or (self.persona.id,)

    def performer(self, character: str | None):
        """The persona who performs a directive naming `character` (None: the first); None
        when `character` is not in this session's scene."""
        if character is None:
            return self.persona
        return next((p for p in self.cast or (self.persona,) if p.id == character), None)

    @property
    def backend(self) -> str:
        return self.render.backend

    @property
    def stats(self):
        return self.frames.stats

    def ready_message(self, resumed: bool, recordings: list[dict] | None = None) -> dict:
        from ...persona.schema import CharacterState

        vocabulary = self.persona.vocabulary()
        self._ready_sent = True
        return {
            "type": "ready",
            "protocol": PROTOCOL_VERSION,
            "session": self.id,
            "persona": {"id": self.persona.id, "name": self.persona.name, "description": self.persona.description},
            "state": self.state or CharacterState().model_dump(mode="json"),
            "vocabulary": {"actions": vocabulary.action_names, "expressions": vocabulary.expression_names},
            "backend": self.backend,
            "resumed": resumed,
            "video": {"format": "jpeg", "fps": self.frames.stream_fps(self._max_fps)},
            "audio_rate": STREAM_RATE,
            "features": list(FEATURES),
            "recordings": recordings or [],
            "history": self.history.public(),
            **self._scene_fields(),
        }

    def _scene_fields(self) -> dict:
        """1.1: a scene's cast (`scene`: each persona as `persona` is, left to right, with its
        vocabulary) and each character's state (`states`); nothing for one persona."""
        if not self.cast:
            return {}
        from ...persona.schema import CharacterState

        cast = []
        for p in self.cast:
            vocabulary = p.vocabulary()
            cast.append({"id": p.id, "name": p.name, "description": p.description,
                         "vocabulary": {"actions": vocabulary.action_names, "expressions": vocabulary.expression_names}})
        states = {p.id: self.states.get(p.id) or {**CharacterState().model_dump(mode="json"), "character": p.id}
                  for p in self.cast}
        return {"scene": {"personas": cast, "layout": "side_by_side"}, "states": states}

    def accepts(self, kind: str) -> bool:
        return self.host.accepts(kind)

    def enqueue_turn(self, kind: str, value: Any, message_id: str, directive: dict | None = None) -> bool:
        queued = self.turns.enqueue(kind, value, message_id, directive)
        if queued:
            self.history.user(message_id, "chat" if kind == "chat" else "action", value if kind == "chat" else "", directive)
            self.resume()  # a message goes on after a pause
        return queued

    def resume(self) -> None:
        """Go on streaming after the host paused (an interrupt in ComfyUI)."""
        self.host.resume()
        self.render.resumed.set()

    def request_reset(self) -> None:
        if self.speech_lane is not None:
            self.speech_lane.mute_through(self.turns.last_turn)
        media = self.connection.media if self.connection is not None else None
        if media is not None:  # WebRTC: its audio track holds the cut reply's speech
            media.drop_speech()
        self.host.request_reset()
        self.frames.invalidate()

    async def set_recording(self, on: bool, message_id: str) -> None:
        await self.recorder.set(on, message_id)

    # -- lifecycle ----------------------------------------------------------------------------

    def start_tasks(self) -> None:
        name = self.id[:8]
        self._tasks = [
            self.loop.create_task(self.render.run(), name=f"persona-render-{name}"),
            self.loop.create_task(self.turns.run(), name=f"persona-turns-{name}"),
        ]
        if self.speech_lane is not None:
            self._tasks.append(self.loop.create_task(self.speech_lane.run(), name=f"persona-speech-{name}"))

    def attach(self, connection: Connection, max_fps: int | None) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self.detached_at = None
        self._max_fps = max_fps
        connection.session = self
        self.connection = connection

    def go_live(self) -> None:
        """The service sent `ready`, the protocol's first message: what waited for a viewer
        (a resumed session's backlog) follows it, then frames and audio. Until now `send`
        kept queueing, so nothing reached the viewer ahead of `ready`."""
        connection = self.connection
        if connection is None:
            return
        self._live = True
        connection.stream = self.frames
        while self.backlog:
            connection.send(self.backlog.popleft())
        self.render.attached.set()
        self.frames.need_frames.set()

    def detach(self, connection: Connection) -> None:
        if self.connection is not connection:
            return
        connection.session = None
        connection.stream = None
        self.connection = None
        self._live = False
        self.render.attached.clear()
        self.frames.drop()
        self.detached_at = self.loop.time()
        lifecycle = self.context.lifecycle
        if not lifecycle.closing:  # closing: the owner ends every session itself
            self._grace = lifecycle.expire_later(self.id, self.context.config.resume_grace_s)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._grace is not None:
            self._grace.cancel()
        if self.speech_lane is not None:
            self.speech_lane.closed = True
            self.speech_lane.speech.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            except Exception:  # a task that died of a bug already reported it
                log.exception("session %s task failed", self.id[:8])
        await self.recorder.close()
        # A turn or tick may still be running on the pool: the host closes after it.
        await self.loop.run_in_executor(self.context.pool, self.host.close)
