"""Server-side session recording (`record` messages): where files go and how they are named.

Each recording is a fragmented MP4 (`video.recording.SessionRecorder`: H.264 + AAC,
written as it is produced, so a killed server leaves a playable file) named by an
unguessable token; the download URL is `/persona/recordings/<token>.mp4` and the token is
the only way to name it. Frames come from the stream sink (every backend), audio from the
session's speech packets, both with `pts_ms` on the session clock.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

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


class ActiveRecording:
    """One recording in progress. Thread-safe: the render thread pushes frames, the TTS
    thread audio, the event loop stops it (through a worker thread: the flush blocks)."""

    def __init__(self, folder: Path, width: int, height: int, fps: float, audio_rate: int) -> None:
        from ...video.recording import SessionRecorder

        self.token = new_token()
        self.path = folder / f"{self.token}.mp4"
        self.fps = float(fps)
        self.recorder = SessionRecorder(self.path, width, height, fps, audio_rate)
        self._lock = threading.Lock()
        self._first_pts: float | None = None
        self._last_pts: float | None = None
        self.failed: str | None = None

    def start(self) -> None:
        self.recorder.start()

    def push_frames(self, frames: np.ndarray, pts_ms: list[int]) -> None:
        """A rendered chunk; frames at or before the last one (a restarted clock) are skipped."""
        from ...video.recording import RecordingError

        with self._lock:
            if self.failed or not self.recorder.recording:
                return
            try:
                for rgb, pts in zip(frames, pts_ms, strict=True):
                    if self._last_pts is not None and pts <= self._last_pts:
                        continue
                    self.recorder.push_frame(rgb, pts)
                    if self._first_pts is None:
                        self._first_pts = float(pts)
                    self._last_pts = float(pts)
            except RecordingError as exc:  # e.g. the renderer restarted at another size
                self.failed = str(exc)
                log.warning("recording %s stopped taking frames: %s", self.token[:6], exc)

    def push_audio(self, pcm: np.ndarray, pts_ms: int) -> None:
        from ...video.recording import RecordingError

        with self._lock:
            if self.failed or not self.recorder.recording:
                return
            try:
                self.recorder.push_audio(pcm, pts_ms)
            except RecordingError as exc:
                self.failed = str(exc)

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
