"""One viewer session: its workflow run, frame pipeline, and the connection watching it.

Threads and tasks (all owned here and cancelled in `close()`):
- the **render task** asks the runner for one tick at a time on the service's thread
  pool; the stream sink's chunk is JPEG-encoded on that same worker thread, then the
  frames go into a bounded queue (`frames`, oldest dropped when full). It renders only
  while a viewer is attached and the queue is low, so the backend's frame clock never
  runs far ahead of what is shown.
- the **turn task** runs chat/action messages one at a time through the runner's turn
  lane on the pool (an interpreter may block for seconds; frames keep flowing). When a
  turn's plan lands, queued frames rendered before it are stale: they are dropped, and
  the next tick renders the new plan at once. That is what keeps directive-to-frame
  latency near one render instead of one queue length.
- the **pump** (one per connection, `Connection.pump`) is the only writer of the socket:
  JSON messages first, then frames paced at the stream rate, and `metrics` every second.

A disconnect detaches the connection; the session waits `resume_grace_s` for a `hello`
naming it, then closes (runner, store entry, tasks).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...video.voice.base import STREAM_RATE
from .protocol import MEDIA_AUDIO, MEDIA_JPEG, PROTOCOL_VERSION, ProtocolError, error_message, media_frame
from .recording import RecentAudio, recording_url
from .speech import AUDIO_AHEAD_MS

if TYPE_CHECKING:
    from aiohttp import web

    from .service import PersonaService

log = logging.getLogger("comfyui_persona.serve")

#: JSON messages kept for a detached session (delivered on resume), oldest dropped.
BACKLOG_LIMIT = 256
#: Pending chat/action turns per session before `rate_limited`.
TURN_QUEUE_LIMIT = 16
#: Released audio is kept this much longer than it is released ahead (`RecentAudio`'s
#: backstop; what has sounded by a chunk's end goes at once): a LongLive chunk (12 frames
#: at 16 fps, 750 ms) plus a packet, with room.
RECENT_AUDIO_MARGIN_MS = 1500
#: Where a streamed reply's text has a complete sentence (same rule as video.voice.sentences).
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")


@dataclass
class EncodedFrame:
    data: bytes  # header + JPEG
    index: int
    pts_ms: int
    shows: list[int]


@dataclass
class TurnRequest:
    kind: str  # "chat" | "action"
    value: Any
    turn: int
    message_id: str
    received: float  # loop time
    directive: dict | None = None


@dataclass
class SessionStats:
    frames_sent: int = 0
    dropped: int = 0
    latency_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    sent_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))

    def fps(self, now: float) -> float:
        recent = [t for t in self.sent_times if now - t <= 1.0]
        return float(len(recent))


class Connection:
    """One WebSocket: its outbound JSON queue and the pump that writes it."""

    def __init__(self, ws: web.WebSocketResponse, max_fps: int | None = None, peer: str = "?") -> None:
        self.ws = ws
        self.peer = peer  # the client's address: per-address limits (limits.py)
        self.outbox: collections.deque[dict] = collections.deque()
        self.wake = asyncio.Event()
        self.session: ViewerSession | None = None
        self.max_fps = max_fps
        self.closed = False
        self.pump_task: asyncio.Task | None = None

    def send(self, message: dict | bytes) -> None:
        self.outbox.append(message)
        self.wake.set()

    def start(self) -> None:
        self.pump_task = asyncio.get_running_loop().create_task(self._pump(), name="persona-pump")

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        next_metrics = loop.time() + 1.0
        last_pts: int | None = None
        try:
            while not self.closed:
                while self.outbox:
                    item = self.outbox.popleft()
                    if isinstance(item, bytes):  # an audio packet (kind 2): sent as soon as synthesised
                        await self.ws.send_bytes(item)
                    else:
                        await self.ws.send_str(json.dumps(item, separators=(",", ":")))
                session = self.session
                now = loop.time()
                timeout = 0.5
                if session is not None:
                    interval = 1.0 / session.stream_fps(self.max_fps)
                    if session.frames and now >= next_due:
                        frame = session.frames.popleft()
                        if self.max_fps and last_pts is not None and frame.pts_ms - last_pts < 1000.0 / self.max_fps - 1:
                            session.want_frames()
                            continue  # the viewer asked for fewer frames per second: skip, not stale
                        await self.ws.send_bytes(frame.data)
                        last_pts = frame.pts_ms
                        session.frame_sent(frame, loop.time())
                        # Keep the rate: never burst to catch up by more than one frame.
                        next_due = max(next_due + interval, loop.time() - interval)
                        session.want_frames()
                        continue
                    if now >= next_metrics:
                        next_metrics = now + 1.0
                        self.send(session.metrics_message(now))
                        continue
                    timeout = min(next_metrics - now, max(0.0, next_due - now) if session.frames else 0.5)
                self.wake.clear()
                if self.outbox:
                    continue
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=max(0.001, timeout))
                except asyncio.TimeoutError:
                    pass
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            # RuntimeError: aiohttp refuses to write to a closing socket; the handler cleans up.
            pass

    async def close(self) -> None:
        self.closed = True
        self.wake.set()
        if self.pump_task is not None:
            self.pump_task.cancel()
            try:
                await asyncio.wait_for(self.pump_task, timeout=5)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass


class ViewerSession:
    """A session's runner and pipeline; survives reconnects for the grace period."""

    def __init__(self, service: PersonaService, session_id: str, persona, runner, max_fps: int | None) -> None:
        self.service = service
        self.id = session_id
        self.persona = persona
        self.runner = runner
        self.loop = asyncio.get_running_loop()
        cfg = service.config
        self.frames: collections.deque[EncodedFrame] = collections.deque()
        self.frame_limit = cfg.frame_queue
        self.backlog: collections.deque[dict] = collections.deque(maxlen=BACKLOG_LIMIT)
        self.connection: Connection | None = None
        self.attached = asyncio.Event()
        self.need_frames = asyncio.Event()
        self.turns: asyncio.Queue[TurnRequest] = asyncio.Queue(maxsize=TURN_QUEUE_LIMIT)
        self.turn_ids: dict[int, str] = {}
        self.directive_times: dict[int, float] = {}
        self.next_turn = 0
        self.plan_version = 0
        self.stats = SessionStats()
        self.backend = "?"
        self.fps = 24.0
        self.chunk_frames = 1
        self.state: dict | None = None
        self.started = time.monotonic()
        self.owner = "?"  # the address that created it (per-address session limit)
        self.detached_at: float | None = None  # loop time of the last detach, while waiting to be resumed
        self.closed = False
        self._tick_frames: list[EncodedFrame] = []
        self._unshown: list[int] = []  # turns shown only by frames dropped as stale (see _render_loop)
        self._encoder = service.encoder
        self._quality = cfg.jpeg_quality
        self._max_fps = max_fps
        self._grace: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task] = []
        self._ready_state_done = False
        self.frame_shape: tuple[int, int] | None = None  # (height, width) of rendered frames
        self.speech = None  # SessionSpeech, set by the service when speech is on
        self.recording = None  # ActiveRecording while `record` is on
        # Speech released but not yet sounded by the last chunk: a recording started now
        # begins with it (speech is released up to AUDIO_AHEAD_MS before it sounds).
        self._recent_audio = RecentAudio(AUDIO_AHEAD_MS + RECENT_AUDIO_MARGIN_MS)
        self._record_busy = False
        # (speech generation, text): a text asked for before a cut is not spoken (see `say`).
        self._speech_texts: asyncio.Queue[tuple[int, str]] = asyncio.Queue(maxsize=TURN_QUEUE_LIMIT)
        self._speech_cut = asyncio.Event()  # set by stop_speaking: the reply being synthesised is over
        self._speech_turn: int | None = None  # the turn whose reply is being spoken
        self._muted_through = 0  # replies to turns up to this one are not spoken (a reset came after)
        self._audio_index = 0
        self._spoken: dict[int, str] = {}  # turn → reply text already handed to speech

    # -- events from node code (worker threads) --------------------------------------------

    def emit(self, kind: str, payload: dict) -> None:
        """The session store's emitter: called on worker threads by the nodes."""
        if kind == "chunk":
            frames = payload["frames"]
            self._tick_frames.extend(self._encode(frames))
            chunk = frames.chunk
            if len(chunk.pts_ms):
                # Speech for this chunk was released in this tick or earlier (never later:
                # new speech starts after the chunk in flight), so it is all held now.
                audio = self._recent_audio.through(float(chunk.pts_ms[-1]) + 1000.0 / frames.fps)
                recording = self.recording  # read once: a recording starts or stops between chunks
                if recording is not None:
                    recording.push_chunk(chunk.frames, chunk.pts_ms, audio)
            return
        self.loop.call_soon_threadsafe(self._on_event, kind, payload)

    def _encode(self, frames) -> list[EncodedFrame]:
        chunk = frames.chunk
        self.backend = frames.backend
        self.fps = frames.fps
        self.chunk_frames = max(1, len(chunk.frames))
        out = []
        if len(chunk.frames):
            self.frame_shape = (int(chunk.frames.shape[1]), int(chunk.frames.shape[2]))
        for k, rgb in enumerate(chunk.frames):
            index = chunk.first_index + k
            pts = int(chunk.pts_ms[k])
            payload = media_frame(MEDIA_JPEG, index, pts, self._encoder(rgb, self._quality))
            out.append(EncodedFrame(payload, index, pts, list(chunk.shows_directives) if k == 0 else []))
        return out

    def _on_event(self, kind: str, payload: dict) -> None:
        if self.closed:
            return
        turn = payload.get("turn")
        if kind == "directives":
            self.directive_times[turn] = self.loop.time()
            self.send(
                {
                    "type": "directives",
                    "reply_to": self.turn_ids.get(turn),
                    "directives": [d.model_dump(mode="json") for d in payload["directives"]],
                }
            )
        elif kind == "reply":
            self.send({"type": "reply", "reply_to": self.turn_ids.get(turn), "text": payload["text"], "done": payload["done"]})
            self._speak_streamed(turn, payload["text"], payload["done"])
        elif kind == "state":
            self.state = payload["state"]
            if self._ready_state_done:
                self.send({"type": "state", "state": payload["state"]})

    # -- outbound ---------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        if self.connection is not None:
            self.connection.send(message)
        else:
            self.backlog.append(message)

    def error(self, code: str, message: str, reply_to: str | None = None) -> None:
        self.service.metrics.errors_total[code] += 1
        self.send(error_message(code, message, reply_to))

    def stream_fps(self, max_fps: int | None) -> float:
        return min(self.fps, float(max_fps)) if max_fps else self.fps

    def frame_sent(self, frame: EncodedFrame, now: float) -> None:
        self.stats.frames_sent += 1
        self.stats.sent_times.append(now)
        self.service.metrics.frames_sent_total += 1
        for turn in frame.shows:
            began = self.directive_times.pop(turn, None)
            if began is not None:
                latency = (now - began) * 1000.0
                self.stats.latency_ms = latency
                self.stats.latencies_ms.append(latency)
                del self.stats.latencies_ms[:-1000]
                self.service.metrics.observe_latency(latency)
            # Earlier turns no frame will show (superseded before they were rendered, or their
            # frames dropped): forget their clocks, or they would pile up for the session's life.
            for older in [t for t in self.directive_times if t < turn]:
                del self.directive_times[older]

    def want_frames(self) -> None:
        if len(self.frames) < max(2, self.chunk_frames):
            self.need_frames.set()

    def metrics_message(self, now: float) -> dict:
        latency = self.stats.latency_ms
        return {
            "type": "metrics",
            "fps": round(self.stats.fps(now), 2),
            "latency_ms": None if latency is None else round(latency, 1),
            "frames_sent": self.stats.frames_sent,
            "dropped": self.stats.dropped,
        }

    def _drop_frames(self, count: int | None = None) -> None:
        count = len(self.frames) if count is None else count
        for _ in range(count):
            self.frames.popleft()
        self.stats.dropped += count
        self.service.metrics.frames_dropped_total += count

    # -- lifecycle --------------------------------------------------------------------------

    def start_tasks(self) -> None:
        self._tasks = [
            self.loop.create_task(self._render_loop(), name=f"persona-render-{self.id[:8]}"),
            self.loop.create_task(self._turn_loop(), name=f"persona-turns-{self.id[:8]}"),
        ]
        if self.speech is not None:
            self._recent_audio.keep_ms = self.speech.ahead_ms + RECENT_AUDIO_MARGIN_MS
            self.speech.listen(self._on_speech_audio, self._on_speaking)
            self._tasks.append(self.loop.create_task(self._speech_loop(), name=f"persona-speech-{self.id[:8]}"))

    def ready_message(self, resumed: bool, recordings: list[dict] | None = None) -> dict:
        vocabulary = self.persona.vocabulary()
        self._ready_state_done = True
        from ...persona.schema import CharacterState

        return {
            "type": "ready",
            "protocol": PROTOCOL_VERSION,
            "session": self.id,
            "persona": {"id": self.persona.id, "name": self.persona.name, "description": self.persona.description},
            "state": self.state or CharacterState().model_dump(mode="json"),
            "vocabulary": {"actions": vocabulary.action_names, "expressions": vocabulary.expression_names},
            "backend": self.backend,
            "resumed": resumed,
            "video": {"format": "jpeg", "fps": self.stream_fps(self._max_fps)},
            "audio_rate": STREAM_RATE,
            "recordings": recordings or [],
        }

    def attach(self, connection: Connection, max_fps: int | None) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self.detached_at = None
        self._max_fps = max_fps
        connection.session = self
        self.connection = connection
        while self.backlog:
            connection.send(self.backlog.popleft())
        self.attached.set()
        self.need_frames.set()

    def detach(self, connection: Connection) -> None:
        if self.connection is not connection:
            return
        connection.session = None
        self.connection = None
        self.attached.clear()
        self._drop_frames()
        self.detached_at = self.loop.time()
        if not self.service.closing:  # closing: the service ends every session itself
            self._grace = self.service.expire_later(self.id, self.service.config.resume_grace_s)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._grace is not None:
            self._grace.cancel()
        if self.speech is not None:
            self.speech.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
            except Exception:  # a task that died of a bug already reported it
                log.exception("session %s task failed", self.id[:8])
        if self.recording is not None:  # finish the file: it stays downloadable by its token
            recording, self.recording = self.recording, None
            try:
                await self.loop.run_in_executor(self.service.pool, self._finish_recording, recording)
            except Exception:
                log.exception("session %s: closing its recording failed", self.id[:8])
        # A turn or tick may still be running on the pool: close the runner after it.
        await self.loop.run_in_executor(self.service.pool, self.runner.close)

    # -- turns ------------------------------------------------------------------------------

    def enqueue_turn(self, kind: str, value: Any, message_id: str, directive: dict | None = None) -> bool:
        self.next_turn += 1
        request = TurnRequest(kind, value, self.next_turn, message_id, self.loop.time(), directive)
        try:
            self.turns.put_nowait(request)
        except asyncio.QueueFull:
            return False
        self.turn_ids[request.turn] = message_id
        if len(self.turn_ids) > 4 * TURN_QUEUE_LIMIT:
            for old in sorted(self.turn_ids)[: -2 * TURN_QUEUE_LIMIT]:
                self.turn_ids.pop(old, None)
        return True

    async def _turn_loop(self) -> None:
        while True:
            request = await self.turns.get()
            if request.kind == "action":
                # No interpreter runs: announce the directive as the tracker will perform it.
                self.send({"type": "directives", "reply_to": request.message_id,
                           "directives": self._as_performed(request.directive)})
                if request.directive.get("dialogue"):
                    self.send({"type": "reply", "reply_to": request.message_id, "text": request.directive["dialogue"], "done": True})
                    self.say(request.directive["dialogue"], request.turn)
                self.directive_times[request.turn] = request.received
            try:
                await self.loop.run_in_executor(self.service.pool, self.runner.turn, request.kind, request.value, request.turn)
            except Exception as exc:
                log.warning("session %s turn %d failed: %s", self.id[:8], request.turn, exc)
                self.error("internal", f"interpreting message failed: {exc}", request.message_id)
                continue
            self.plan_version += 1
            self._drop_frames()  # rendered before this plan: stale
            self.need_frames.set()

    def request_reset(self) -> None:
        # Replies to the turns asked for so far are not spoken any more, also the parts of a
        # reply still streaming in and replies whose interpretation is still under way.
        self._muted_through = self.next_turn
        self.stop_speaking()
        self.runner.request_reset()
        self.plan_version += 1
        self._drop_frames()
        self.need_frames.set()

    # -- rendering --------------------------------------------------------------------------

    async def _render_loop(self) -> None:
        failures = 0
        while True:
            await self.attached.wait()
            if len(self.frames) >= max(2, self.chunk_frames):
                self.need_frames.clear()
                await self.need_frames.wait()
                continue
            version = self.plan_version
            self._tick_frames = []
            try:
                await self.loop.run_in_executor(self.service.pool, self.runner.tick)
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("session %s render failed: %s", self.id[:8], exc)
                self.error("internal", f"rendering failed: {exc}")
                await asyncio.sleep(min(5.0, 0.5 * failures))
                continue
            produced, self._tick_frames = self._tick_frames, []
            if version != self.plan_version:
                self.stats.dropped += len(produced)  # rendered while a new plan landed: stale
                self.service.metrics.frames_dropped_total += len(produced)
                # The tick may already have submitted that plan (a turn's plan is visible to
                # the tick before `runner.turn` returns); the backend goes on from it, so the
                # next kept frame is the first sent that shows it: its latency is measured there.
                self._unshown.extend(turn for frame in produced for turn in frame.shows)
                continue
            if self._unshown and produced:
                produced[0].shows[:0] = self._unshown
                self._unshown = []
            self.frames.extend(produced)
            if self.recording is not None and self.recording.stop_reason and not self._record_busy:
                self._tasks.append(self.loop.create_task(self._auto_stop_recording()))
            overflow = len(self.frames) - self.frame_limit
            if overflow > 0:
                self._drop_frames(overflow)
            if self.connection is not None:
                self.connection.wake.set()

    # -- speech -----------------------------------------------------------------------------

    def say(self, text: str, turn: int) -> None:
        """Speak `text`, part of the reply to `turn`. Parts of one reply queue back to back
        (a streamed reply arrives sentence by sentence); the first part of a new reply cuts
        off whatever the previous one has not said yet ("barge-in", `stop_speaking`)."""
        if self.speech is None or self.closed or not text.strip() or turn <= self._muted_through:
            return
        if turn != self._speech_turn:
            self._speech_turn = turn
            self.stop_speaking(finish_sent=True)
        try:
            self._speech_texts.put_nowait((self.speech.generation, text))
        except asyncio.QueueFull:
            log.warning("session %s: speech queue full, a reply is not spoken", self.id[:8])

    def _speak_streamed(self, turn: int, text: str, done: bool) -> None:
        """Speak a reply as it streams: each partial `reply` (cumulative text) hands over
        the sentences it completed, the final one the rest, so speech starts with the
        first sentence even when an LLM takes seconds for the whole reply."""
        if self.speech is None:
            return
        spoken = self._spoken.pop(turn, "") if done else self._spoken.get(turn, "")
        if spoken and not text.startswith(spoken):
            return  # the final text was rewritten: what was said stays said, nothing repeats
        rest = text[len(spoken) :]
        if done:
            self.say(rest, turn)
            return
        ends = [m.end() for m in _SENTENCE_END.finditer(rest)]
        if ends:
            self.say(rest[: ends[-1]], turn)
            self._spoken[turn] = spoken + rest[: ends[-1]]
            while len(self._spoken) > 4 * TURN_QUEUE_LIMIT:  # turns that never finished
                self._spoken.pop(next(iter(self._spoken)))

    def stop_speaking(self, finish_sent: bool = False) -> None:
        """Stop talking: `reset` (cut at the next frame) and a new reply barging in
        (`finish_sent`: cut where the audio already sent ends) take this one path. Texts
        still waiting are dropped; a sentence being synthesised is not queued after the
        cut (`SessionSpeech.stop` bumps the generation every text is tagged with)."""
        if self.speech is None:
            return
        while not self._speech_texts.empty():
            self._speech_texts.get_nowait()
        self.speech.stop(finish_sent=finish_sent)
        self._speech_cut.set()

    async def _speech_loop(self) -> None:
        """Speak queued replies one at a time; synthesis runs on the speech pool (it blocks).

        A reply cut off is not waited for: the sentence it is synthesising is dropped when
        done (`SessionSpeech.speak` checks the generation), so the next reply starts on
        another pool thread at once, not after that sentence (with piper, a few hundred ms)."""
        while True:
            generation, text = await self._speech_texts.get()
            if generation != self.speech.generation:
                continue  # cut off before its turn came
            self._speech_cut.clear()
            speaking = self.loop.run_in_executor(
                self.service.speech_pool, functools.partial(self.speech.speak, text, generation=generation)
            )
            cut = self.loop.create_task(self._speech_cut.wait())
            try:
                await asyncio.wait({speaking, cut}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cut.cancel()
            if not speaking.done():
                speaking.add_done_callback(self._speech_done)  # finishes on its own, unheard
                continue
            self._speech_done(speaking)

    def _speech_done(self, speaking: asyncio.Future) -> None:
        exc = None if speaking.cancelled() else speaking.exception()
        if exc is not None:  # a voice the engine lacks, a native failure: say so, go on
            log.warning("session %s: speaking failed: %s", self.id[:8], exc)
            self.error("internal", f"speaking the reply failed: {type(exc).__name__}: {exc}")

    def _on_speech_audio(self, packets: list) -> None:
        """On the render thread, audio falling due (`SessionSpeech.render`): sent, and held
        until it has sounded, for the recording's chunks (`RecentAudio`): each chunk is
        recorded with the held audio sounding during it, whenever `record` started. Only
        released audio is recorded, so a cut-off reply's unsent rest is in neither the
        stream nor the file."""
        frames = []
        for packet in packets:
            frames.append(media_frame(MEDIA_AUDIO, self._audio_index, packet.pts_ms, packet.payload()))
            self._audio_index += 1
        self._recent_audio.add(packets)
        self.loop.call_soon_threadsafe(self._send_audio, frames)

    def _on_speaking(self, start_ms: int | None, end_ms: int) -> None:
        """Under the speech lock (any thread): speaking times go to the loop in order."""
        self.loop.call_soon_threadsafe(self._mark_speaking, start_ms, end_ms)

    def _send_audio(self, frames: list[bytes]) -> None:
        connection = self.connection
        if connection is None or self.closed:
            return  # nobody listens: audio is not backlogged (its time passes)
        for data in frames:
            connection.send(data)
        self.service.metrics.audio_packets_total += len(frames)

    def _as_performed(self, directive: dict) -> list[dict]:
        store_session = self.service.store.find(self.id)
        if store_session is None:
            return [directive]
        from ...persona.schema import ActionDirective

        planned = store_session.as_performed([ActionDirective.model_validate(directive)])
        return [d.model_dump(mode="json", exclude_none=True) for d in planned]

    def _mark_speaking(self, start_ms: int | None, end_ms: int) -> None:
        """Tell the state tracker when the persona talks (its clock is the store session's):
        from `start_ms` to `end_ms`, or with `start_ms` None, no longer from `end_ms` (a cut)."""
        store_session = self.service.store.find(self.id)
        if store_session is None or self.speech is None or self.closed:
            return
        with store_session.lock:
            tracker = store_session.peek("tracker")
            if tracker is None:
                return
            offset = store_session.now_ms() - self.speech.next_frame_ms()
            if start_ms is not None:
                tracker.set_speaking(True, int(start_ms + offset))
            tracker.set_speaking(False, int(end_ms + offset))

    # -- recording --------------------------------------------------------------------------

    async def set_recording(self, on: bool, message_id: str) -> None:
        """Start or stop recording to MP4; answers `recording` (or raises ProtocolError)."""
        if self._record_busy:
            raise ProtocolError("invalid", "a record request is still being handled; wait for its answer", message_id)
        self._record_busy = True
        try:
            if on:
                await self._start_recording(message_id)
                return
            if self.recording is None:
                raise ProtocolError("invalid", "this session is not recording; send record on=true first", message_id)
            await self._stop_recording(message_id)
        finally:
            self._record_busy = False

    async def _start_recording(self, message_id: str) -> None:
        if self.recording is not None:
            raise ProtocolError("invalid", "this session is already recording; send record on=false first", message_id)
        shape = (self.speech.frame_shape if self.speech is not None else None) or self.frame_shape
        if shape is None:
            raise ProtocolError("invalid", "nothing has been rendered yet; record after the first frame", message_id)
        service, cfg = self.service, self.service.config
        try:
            recording = await self.loop.run_in_executor(
                service.pool, self._open_recording, shape[1], shape[0], self.fps,
                cfg.recording_max_minutes * 60_000.0, cfg.recordings_min_free_mb * 2**20,
            )
        except Exception as exc:
            log.warning("session %s: recording could not start: %s", self.id[:8], exc)
            raise ProtocolError("internal", f"recording could not start: {exc}", message_id) from None
        if self.closed:  # the session ended while the file was being opened
            await self.loop.run_in_executor(service.pool, self._finish_recording, recording)
            return
        self.recording = recording
        # The URL now, not at the end: after a crash or a SIGTERM the viewer still has it.
        self.send({"type": "recording", "reply_to": message_id, "on": True, "url": recording_url(recording.token),
                   "duration_ms": 0, "frames": 0})

    def _open_recording(self, width: int, height: int, fps: float, max_ms: float, min_free: int):
        """Worker thread: retention and the free-space check, then the file, then the index."""
        from .recording import ActiveRecording

        self.service.prepare_recordings()
        recording = ActiveRecording(self.service.recordings_dir, width, height, fps, STREAM_RATE,
                                    max_ms=max_ms, min_free_bytes=min_free)
        recording.start()
        self.service.recording_started(recording, self.id)
        return recording

    def _finish_recording(self, recording):
        """Worker thread: close the file (a full disk keeps it to its last whole fragment)
        and record the result in the index; returns the result."""
        result = None
        try:
            result = recording.stop()
            return result
        finally:
            self.service.recording_finished(recording, result)

    async def _stop_recording(self, message_id: str | None, reason: str | None = None) -> None:
        """Stop the recording and answer `recording` (`on: false`, with `reason` when the
        server stopped it: a full disk, the length limit)."""
        recording, self.recording = self.recording, None
        if recording is None:
            return
        try:
            result = await self.loop.run_in_executor(self.service.pool, self._finish_recording, recording)
        except Exception as exc:
            log.warning("session %s: recording could not be finished: %s", self.id[:8], exc)
            raise ProtocolError("internal", f"finishing the recording failed: {type(exc).__name__}: {exc}", message_id) from None
        message = {"type": "recording", "reply_to": message_id, "on": False, "url": recording_url(result.token),
                   "duration_ms": result.duration_ms, "frames": result.frames}
        reason = reason or result.problem
        if reason:
            message["reason"] = reason
        if result.problem or recording.stop_is_failure:  # the disk, not the viewer, ended it
            self.error("internal", reason or "the recording failed", message_id)
        self.send(message)

    async def _auto_stop_recording(self) -> None:
        """The recording asked to be stopped (disk full or nearly, length limit): stop it
        as if the viewer had, telling them why. The stream is never held for it."""
        recording = self.recording
        if recording is None or self._record_busy:
            return
        self._record_busy = True
        try:
            await self._stop_recording(None, recording.stop_reason)
        except ProtocolError as exc:
            self.error(exc.code, exc.message)
        finally:
            self._record_busy = False
