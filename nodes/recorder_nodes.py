"""Session recorder node: the session's frames and, when it speaks, its voice, written to MP4.

Every chunk goes through `video.recording.SessionRecorder`: H.264 + AAC in a fragmented MP4
(`frag_keyframe+empty_moov`, one-second fragments flushed as they complete), so the file
plays while it grows and a crash loses at most about the last second: nothing waits for a
final `moov` box. Audio: when a host makes the session speak (the headless server puts a
`SessionSpeech` in the session as its `"speech"` part and queues each sentence on the
session clock), every queued sentence is written at its start time, so mouth and voice
stay as in sync in the file as they are on the wire; a quiet session gets a silent track.
Inside ComfyUI the file lands in ComfyUI's output folder (and shows in the node's `ui`
output); headless, in $PERSONA_RECORDINGS_DIR or ./recordings.
"""

from __future__ import annotations

import math
import os
import re
import threading
from pathlib import Path
from typing import Any

from .comfy_env import output_directory, progress
from .session_store import current_store
from .types import FRAMES, FramesValue

RECORDINGS_ENV = "PERSONA_RECORDINGS_DIR"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: How far the recorded (silent) audio track runs ahead of the last frame written.
AUDIO_AHEAD_MS = 100
#: Shortest time between two forced keyframes (see `_ChunkKeyframes`).
KEYFRAME_MIN_MS = 150


class RecordingPathError(ValueError):
    """The filename prefix would write outside the output folder."""


def recordings_root() -> Path:
    return output_directory() or Path(os.environ.get(RECORDINGS_ENV) or "recordings").resolve()


def recording_path(root: Path, prefix: str, session_id: str) -> Path:
    """`root/<prefix>_<session>.mp4`; a prefix may name sub-folders but never leave `root`."""
    prefix = prefix.strip().strip("/") or "persona"
    parts = Path(prefix).parts
    if any(part in ("..", "") or part.startswith(("/", "\\")) for part in parts) or Path(prefix).is_absolute():
        raise RecordingPathError(f"filename_prefix {prefix!r} must stay inside {root}")
    path = (root / f"{prefix}_{_UNSAFE.sub('-', session_id)[:64]}.mp4").resolve()
    if root.resolve() not in path.parents:
        raise RecordingPathError(f"filename_prefix {prefix!r} must stay inside {root}")
    return path


class _Recording:
    """One open MP4 of a session, fed chunk by chunk (and sentence by sentence)."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        from ..video.recording import SessionRecorder
        from ..video.voice import STREAM_RATE

        self.path = path
        self.size = (width, height)
        self.frame_ms = 1000.0 / fps
        self.lock = threading.Lock()
        # The silent track runs AUDIO_AHEAD_MS ahead of the video, so the muxer (which
        # interleaves by time) never holds a fragment's frames back waiting for audio. Safe:
        # the node hears each sentence before it writes the chunk, and a sentence starts at
        # least the host's speech lead (150 ms) after the next frame.
        self.recorder = SessionRecorder(path, width, height, fps, STREAM_RATE, audio_lag_ms=-AUDIO_AHEAD_MS)
        self.recorder.start()
        self._keys = _ChunkKeyframes(self.recorder._video)
        self.recorder._video = self._keys  # SessionRecorder encodes through `_video.encode`
        self.closed = False
        self._offset_ms = 0.0  # added to session pts when the renderer's clock restarted
        self._last_ms: float | None = None
        self._last_key_ms: float | None = None
        self._heard: dict[int, Any] = {}  # id → ScheduledUtterance already written

    @property
    def frames(self) -> int:
        return self.recorder.frames_written

    def write(self, frames: Any, pts_ms: list, on_frame) -> None:
        with self.lock:
            if self.closed:
                return
            first = float(pts_ms[0]) + self._offset_ms if len(pts_ms) else 0.0
            if self._last_ms is not None and first <= self._last_ms:
                # A restarted renderer counts from 0 again: the file's clock goes on.
                self._offset_ms += self._last_ms + self.frame_ms - first
            if self._last_key_ms is None or first - self._last_key_ms >= KEYFRAME_MIN_MS:
                self._keys.want_key = True
                self._last_key_ms = first
            for rgb, pts in zip(frames, pts_ms, strict=True):
                at = float(pts) + self._offset_ms
                self.recorder.push_frame(rgb, at)
                self._last_ms = at
                on_frame()

    def hear(self, scheduled: list) -> int:
        """Write the sentences in `scheduled` not written yet; returns how many were new."""
        from ..video.voice import STREAM_RATE
        from ..video.voice.packets import resample

        new = 0
        with self.lock:
            if self.closed:
                return 0
            for item in scheduled:
                if id(item) in self._heard:
                    continue
                self._heard[id(item)] = item  # kept alive, so its id is never reused
                utterance = item.utterance
                pcm = resample(utterance.pcm, utterance.sample_rate, STREAM_RATE)
                self.recorder.push_audio(pcm, float(item.start_ms) + self._offset_ms)
                new += 1
            if len(self._heard) > 256:  # long sessions: forget sentences long over
                horizon = (self._last_ms or 0.0) - 60_000
                self._heard = {k: v for k, v in self._heard.items() if v.end_ms + self._offset_ms > horizon}
        return new

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.recorder.stop()


class _ChunkKeyframes:
    """The recorder's video stream, with a keyframe forced at the start of a chunk.

    A fragmented MP4 is cut at keyframes, and a reader (or a crash) sees only complete
    fragments; the encoder's own keyframe every second would leave a short session's file
    empty until it ends. So the first frame of a chunk at least `KEYFRAME_MIN_MS` after the
    last forced keyframe is coded as one: the file is readable a few hundred ms behind."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.want_key = False

    def encode(self, frame: Any = None) -> Any:
        if frame is not None and self.want_key:
            import av

            # Converted here: the stream's own RGB→YUV conversion makes a new frame and
            # would drop the picture type.
            pts, time_base = frame.pts, frame.time_base
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = pts, time_base
            frame.pict_type = av.video.frame.PictureType.I
            self.want_key = False
        return self.stream.encode(frame)


def queued_speech(session: Any) -> list:
    """The sentences the session's speech part has queued (`ScheduledUtterance`s on the
    session clock), oldest first; empty when nothing speaks in this session.

    The speech part (`headless.server.speech.SessionSpeech`, found by duck typing: nodes
    never import headless) has a public `scheduled()`: a thread-safe copy of its
    `SpeechQueue`, which keeps each sentence until it has been spoken; the recorder runs
    after the renderer on every chunk, so it sees each sentence while it is still queued."""
    scheduled = getattr(session.peek("speech"), "scheduled", None)
    return list(scheduled()) if callable(scheduled) else []


class PersonaSessionRecorder:
    """Records the session's stream to an MP4 file, chunk after chunk."""

    DESCRIPTION = (
        "Session recorder: appends each rendered chunk, and the persona's voice when it speaks, to "
        "<output>/<prefix>_<session>.mp4 (H.264 + AAC, fragmented MP4: playable while it grows, a crash "
        "loses at most the last second). A new frame size starts a new file."
    )
    CATEGORY = "persona/video"
    RETURN_TYPES = ()
    FUNCTION = "record"
    OUTPUT_NODE = True
    STREAMING = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "frames": (FRAMES, {"tooltip": "Frames from a renderer (preview or LongLive)."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "persona/session",
                     "tooltip": "File name start, relative to the output folder; sub-folders allowed."},
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return math.nan

    def record(self, frames: FramesValue, filename_prefix: str) -> dict:
        root = recordings_root()
        path = recording_path(root, filename_prefix, frames.session_id)
        chunk = frames.chunk
        pixels = chunk.frames
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even frame sizes; got {width}x{height}")
        session = current_store().get(frames.session_id)
        key = f"recorder:{path}:{width}x{height}"
        with session.lock:
            recording = session.peek(key)
            if recording is None:
                target = path
                if session.peek(f"recorder-used:{path}"):  # another size: its own file
                    target = path.with_name(f"{path.stem}_{width}x{height}.mp4")
                target.parent.mkdir(parents=True, exist_ok=True)
                recording = _Recording(target, width, height, frames.fps)
                session.replace(key, recording)
                session.resource(f"recorder-used:{path}", lambda: True)
        bar = progress(len(pixels))
        recording.hear(queued_speech(session))  # before the frames: a sentence may start in them
        recording.write(pixels, list(chunk.pts_ms), lambda: bar.update(1))
        try:
            subfolder = str(recording.path.parent.relative_to(root.resolve()))
        except ValueError:
            subfolder = ""
        summary = {"filename": recording.path.name, "subfolder": "" if subfolder == "." else subfolder,
                   "type": "output", "frames": recording.frames}
        return {"ui": {"persona_recording": [summary]}, "result": ()}
