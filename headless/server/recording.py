"""Server-side session recording (`record` messages): where files go and how they are named.

Each recording is a fragmented MP4 (`video.recording.SessionRecorder`: H.264 + AAC,
written as it is produced, so a killed server leaves a playable file) named by an
unguessable token; the download URL is `/persona/recordings/<token>.mp4` and the token is
the only way to name it. Frames come from the stream sink (every backend), audio from the
session's speech packets, both with `pts_ms` on the session clock.

What audio a file holds: exactly what sounds during its frames, from the first frame's pts
to the end of the last one (pts + one frame). Speech is released to the viewer up to
`AUDIO_AHEAD_MS` ahead of the render clock (headless/server/speech.py), so a recording
started mid-sentence needs audio released *before* `record` came, and one stopped
mid-sentence has audio released past its last frame that it must leave out. So released
packets are not written as they come: the session keeps the ones not yet sounded
(`RecentAudio`, bounded), and each chunk is written with the slice of them sounding during
it (`ActiveRecording.push_chunk`, `SessionRecorder.push_sounding`); a packet straddling either end is cut at the
sample. A cut (reset, barge-in) only ever shortens what is released next, so the file
holds what the viewer was sent, nothing a cut removed.
"""

from __future__ import annotations

import collections
import logging
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("comfyui_persona.serve")

TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")


def new_token() -> str:
    return secrets.token_urlsafe(24)  # 32 characters, 192 bits


def recording_url(token: str) -> str:
    return f"/persona/recordings/{token}.mp4"


@dataclass(frozen=True)
class RecordingResult:
    token: str
    path: Path
    frames: int
    duration_ms: int


def _pieces(packets: Sequence[Any], rate: int) -> list[tuple[int, np.ndarray]]:
    """`(pts_ms, pcm)` of released `AudioPacket`s, all at `rate` (else a `RecordingError`
    naming both rates)."""
    from ...video.recording import RecordingError

    for packet in packets:
        if packet.sample_rate != rate:
            raise RecordingError(f"audio packet at {packet.sample_rate} Hz; the recording takes {rate} Hz")
    return [(p.pts_ms, p.pcm) for p in packets]


def packets_sounding(packets: Sequence[Any], origin_ms: float, start: int, end: int, rate: int) -> np.ndarray:
    """`video.recording.sounding` for released `AudioPacket`s (see `_pieces`)."""
    from ...video.recording import sounding

    return sounding(_pieces(packets, rate), origin_ms, start, end, rate)


class RecentAudio:
    """The speech packets released to the viewer that have not sounded yet by the end of
    the last rendered chunk: what a recording starting with the next chunk must begin with.

    Bounded: `through(end)` forgets what has sounded by a chunk's end, and `add` keeps at
    most `keep_ms` before the newest packet's end (a backstop should chunks stop coming).
    Both run on the render thread (speech is released, then the chunk emitted, in one tick);
    the lock keeps that sound when consecutive ticks run on different pool threads."""

    def __init__(self, keep_ms: float) -> None:
        self.keep_ms = float(keep_ms)
        self._lock = threading.Lock()
        self._packets: collections.deque = collections.deque()

    def add(self, packets: Sequence[Any]) -> None:
        """Packets just released, in pts order."""
        if not packets:
            return
        with self._lock:
            held = self._packets
            while held and held[-1].pts_ms >= packets[0].pts_ms:  # the clock restarted: stale
                held.pop()
            held.extend(packets)
            horizon = packets[-1].end_ms - self.keep_ms
            while held and held[0].end_ms <= horizon:
                held.popleft()

    def through(self, end_ms: float) -> list:
        """The packets held (those that may sound in the chunk ending at `end_ms`); then
        those over by `end_ms` are forgotten: a recording started later begins after it."""
        with self._lock:
            held = list(self._packets)
            while self._packets and self._packets[0].end_ms <= end_ms:
                self._packets.popleft()
        return held

    def __len__(self) -> int:
        return len(self._packets)


class ActiveRecording:
    """One recording in progress. Thread-safe: the render thread pushes chunks (frames with
    their audio), the event loop stops it (through a worker thread: the flush blocks)."""

    def __init__(self, folder: Path, width: int, height: int, fps: float, audio_rate: int) -> None:
        from ...video.recording import SessionRecorder

        self.token = new_token()
        self.path = folder / f"{self.token}.mp4"
        self.fps = float(fps)
        self.audio_rate = int(audio_rate)
        # The audio is written here, up to the end of each chunk and before its frames, so
        # the recorder never pads silence ahead of them (it would hide speech: overlaps drop).
        self.recorder = SessionRecorder(self.path, width, height, fps, audio_rate, audio_lag_ms=0)
        self._lock = threading.Lock()
        self._first_pts: float | None = None  # the file's time zero, on the session clock
        self._last_pts: float | None = None
        self.failed: str | None = None

    def start(self) -> None:
        self.recorder.start()

    def push_chunk(self, frames: np.ndarray, pts_ms: Sequence[int], audio: Sequence[Any]) -> None:
        """A rendered chunk and the released packets that may sound during it (`RecentAudio`):
        first the audio sounding from where the written audio ends to the end of the chunk's
        last new frame, then the frames. Frames at or before the last one written (a
        restarted clock) are skipped."""
        from ...video.recording import RecordingError

        with self._lock:
            if self.failed or not self.recorder.recording:
                return
            new, last = [], self._last_pts
            for rgb, pts in zip(frames, pts_ms, strict=True):
                if last is None or pts > last:
                    new.append((rgb, pts))
                    last = pts
            if not new:
                return
            try:
                if self._first_pts is None:
                    self._first_pts = float(new[0][1])
                until = float(new[-1][1]) + 1000.0 / self.fps
                self.recorder.push_sounding(_pieces(audio, self.audio_rate), until, self._first_pts)
                for rgb, pts in new:
                    self.recorder.push_frame(rgb, pts)
                    self._last_pts = float(pts)
            except RecordingError as exc:  # e.g. the renderer restarted at another size
                self.failed = str(exc)
                log.warning("recording %s stopped taking frames: %s", self.token[:6], exc)

    def stop(self) -> RecordingResult:
        """Flush and close the file (blocks: call on a worker thread)."""
        with self._lock:
            if self.recorder.recording:
                self.recorder.stop()
            frames = self.recorder.frames_written
            if self._first_pts is None or self._last_pts is None:
                duration = 0
            else:
                duration = int(round(self._last_pts - self._first_pts + 1000.0 / self.fps))
        return RecordingResult(self.token, self.path, frames, duration)
