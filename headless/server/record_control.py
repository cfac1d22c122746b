"""A viewer session's recording control: `record` on and off, and the recording's input.

Each rendered chunk is written with the released speech sounding during it (`RecentAudio`:
speech is released up to `AUDIO_AHEAD_MS` before it sounds, so a recording started
mid-sentence begins with what was already sent). The recording may ask to be stopped (a
full disk, the length limit: `ActiveRecording.stop_reason`); the render loop's `after_tick`
then stops it as if the viewer had, telling them why. The stream is never held for it.

`record` sent before the first frame (a viewer who clicks Record as the page opens) waits for
that frame, up to `FIRST_FRAME_WAIT_S`, instead of being refused: the file's size is the
frames' size, known only then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from ...video.voice.base import STREAM_RATE
from .protocol import ProtocolError
from .recording import ActiveRecording, RecentAudio, RecordingDesk, RecordingRefused, recording_url, why
from .speech import AUDIO_AHEAD_MS

log = logging.getLogger("comfyui_persona.serve")

__all__ = ["RECENT_AUDIO_MARGIN_MS", "RecordingControl"]

#: Released audio is kept this much longer than it is released ahead (`RecentAudio`'s
#: backstop; what has sounded by a chunk's end goes at once): a LongLive chunk (12 frames at
#: 16 fps, 750 ms) plus a packet, with room.
RECENT_AUDIO_MARGIN_MS = 1500

#: How long `record` waits for a session's first frame (a first LongLive chunk on a loaded GPU,
#: with room; a compile warm-up happens at load, before the session exists).
FIRST_FRAME_WAIT_S = 30.0


class RecordingControl:
    """See module docstring. `frame_info()` gives ((height, width) or None, fps) now."""

    def __init__(self, session_id: str, desk: RecordingDesk, pool: Executor, send: Callable[[dict], None],
                 report: Callable[..., None], frame_info: Callable[[], tuple[tuple[int, int] | None, float]]) -> None:
        self.session_id = session_id
        self._desk = desk
        self._pool = pool
        self._send = send
        self._report = report
        self._frame_info = frame_info
        self.recording: ActiveRecording | None = None
        self.recent_audio = RecentAudio(AUDIO_AHEAD_MS + RECENT_AUDIO_MARGIN_MS)
        self._busy = False
        self._tasks: set[asyncio.Task] = set()
        self._first_frame: asyncio.Future | None = None  # a `record` waiting for the first frame
        self.closed = False

    # -- the render thread --------------------------------------------------------------------

    def audio_released(self, packets: list) -> None:
        self.recent_audio.add(packets)

    def push_chunk(self, value: Any) -> None:
        """A rendered chunk (`FramesValue`) and the speech sounding during it. Speech for this
        chunk was released in this tick or earlier (never later: new speech starts after the
        chunk in flight), so it is all held now."""
        chunk = value.chunk
        if not len(chunk.pts_ms):
            return
        waiter = self._first_frame  # the frame size is known now (the render loop read it first)
        if waiter is not None:
            waiter.get_loop().call_soon_threadsafe(_settle, waiter)
        audio = self.recent_audio.through(float(chunk.pts_ms[-1]) + 1000.0 / value.fps)
        recording = self.recording  # read once: a recording starts or stops between chunks
        if recording is not None:
            recording.push_chunk(chunk.frames, chunk.pts_ms, audio)

    # -- the event loop -----------------------------------------------------------------------

    def after_tick(self) -> None:
        """Stop a recording that asked to be (disk, length), without holding the stream."""
        recording = self.recording
        if recording is not None and recording.stop_reason and not self._busy:
            task = asyncio.get_running_loop().create_task(self._auto_stop())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def set(self, on: bool, message_id: str) -> None:
        """Start or stop recording to MP4; answers `recording` (or raises ProtocolError)."""
        if self._busy:
            raise ProtocolError("invalid", "a record request is still being handled; wait for its answer", message_id)
        self._busy = True
        try:
            if on:
                await self._start(message_id)
            elif self.recording is None:
                raise ProtocolError("invalid", "this session is not recording; send record on=true first", message_id)
            else:
                await self._stop(message_id)
        finally:
            self._busy = False

    async def _start(self, message_id: str) -> None:
        if self.recording is not None:
            raise ProtocolError("invalid", "this session is already recording; send record on=false first", message_id)
        loop = asyncio.get_running_loop()
        shape, fps = await self._wait_for_first_frame(loop, message_id)
        try:
            recording = await loop.run_in_executor(
                self._pool, self._desk.open, self.session_id, shape[1], shape[0], fps, STREAM_RATE)
        except Exception as exc:
            log.warning("session %s: recording could not start: %s", self.session_id[:8], exc)
            detail = exc if isinstance(exc, RecordingRefused) else why(exc)  # a refusal's words are ours: no path
            raise ProtocolError("internal", f"recording could not start: {detail}", message_id) from None
        if self.closed:  # the session ended while the file was being opened
            await loop.run_in_executor(self._pool, self._desk.finish, recording)
            return
        self.recording = recording
        # The URL now, not at the end: after a crash or a SIGTERM the viewer still has it.
        self._send({"type": "recording", "reply_to": message_id, "on": True, "url": recording_url(recording.token),
                    "duration_ms": 0, "frames": 0})

    async def _wait_for_first_frame(self, loop: asyncio.AbstractEventLoop,
                                    message_id: str) -> tuple[tuple[int, int], float]:
        shape, fps = self._frame_info()
        if shape is None:
            self._first_frame = loop.create_future()
            shape, fps = self._frame_info()  # a chunk may have come between the two reads
            try:
                if shape is None:
                    await asyncio.wait_for(self._first_frame, FIRST_FRAME_WAIT_S)
                    shape, fps = self._frame_info()
            except TimeoutError:
                raise ProtocolError("invalid", f"nothing was rendered within {FIRST_FRAME_WAIT_S:.0f} s; "
                                    "record once the video shows", message_id) from None
            finally:
                self._first_frame = None
        if shape is None:  # the session closed while waiting
            raise ProtocolError("invalid", "the session ended before its first frame", message_id)
        return shape, fps

    async def _stop(self, message_id: str | None, reason: str | None = None) -> None:
        """Stop and answer `recording` (`on: false`, with `reason` when the server stopped it)."""
        recording, self.recording = self.recording, None
        if recording is None:
            return
        # Shielded: a session closing meanwhile cancels this task, and a cancelled job still
        # waiting in the pool would never run (the file left open, its token busy for good).
        finishing = asyncio.get_running_loop().run_in_executor(self._pool, self._desk.finish, recording)
        try:
            result = await asyncio.shield(finishing)
        except Exception as exc:
            log.warning("session %s: recording could not be finished: %s", self.session_id[:8], exc)
            raise ProtocolError("internal", f"finishing the recording failed: {why(exc)}", message_id) from None
        message = {"type": "recording", "reply_to": message_id, "on": False, "url": recording_url(result.token),
                   "duration_ms": result.duration_ms, "frames": result.frames}
        reason = reason or result.problem
        if not result.kept:
            reason = "nothing was recorded: it stopped before the first frame came, so no file was kept" + (
                f" ({reason})" if reason else "")
        if reason:
            message["reason"] = reason
        if result.problem or recording.stop_is_failure:  # the disk, not the viewer, ended it
            self._report("internal", reason or "the recording failed", message_id)
        self._send(message)

    async def _auto_stop(self) -> None:
        recording = self.recording
        if recording is None or self._busy:
            return
        self._busy = True
        try:
            await self._stop(None, recording.stop_reason)
        except ProtocolError as exc:
            self._report(exc.code, exc.message)
        finally:
            self._busy = False

    async def close(self) -> None:
        """Finish the file (it stays downloadable by its token)."""
        self.closed = True
        if self._first_frame is not None:
            _settle(self._first_frame)
        for task in list(self._tasks):
            task.cancel()
        recording, self.recording = self.recording, None
        if recording is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, self._desk.finish, recording)
            except Exception:
                log.exception("session %s: closing its recording failed", self.session_id[:8])


def _settle(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
