"""Session recorder node: the session's frames and, when it speaks, its voice, written to MP4.

Every chunk goes through `video.recording.SessionRecorder`: H.264 + AAC in a fragmented MP4
(`frag_keyframe+empty_moov`, one-second fragments flushed as they complete), so the file
plays while it grows and a crash loses at most about the last second: nothing waits for a
final `moov` box. Audio: when a host makes the session speak (the headless server puts a
`SessionSpeech` in the session as its `"speech"` part and queues each sentence on the
session clock), each chunk is written with exactly the audio that sounds during it: the
slices of the queued sentences that overlap its time span, silence elsewhere. A reply cut
off (a reset, a new reply barging in: `SessionSpeech.stop`) is therefore cut in the file
where it is cut for the viewer, and mouth and voice stay as in sync in the file as they
are on the wire; a quiet session gets a silent track.
Inside ComfyUI the file lands in ComfyUI's output folder (and shows in the node's `ui`
output); headless, in $PERSONA_RECORDINGS_DIR or ./recordings.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from pathlib import Path
from typing import Any

from ..errors import PersonaError
from .comfy_env import output_directory, progress
from .runtime import current_store, every_run
from .types import FRAMES, FramesValue

RECORDINGS_ENV = "PERSONA_RECORDINGS_DIR"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
#: Shortest time between two forced keyframes (see `_ChunkKeyframes`).
KEYFRAME_MIN_MS = 150


class RecordingPathError(PersonaError, ValueError):
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
    """One open MP4 of a session, fed chunk by chunk: each chunk's frames and the audio
    that sounds while they show."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        from ..video.recording import SessionRecorder
        from ..video.voice import STREAM_RATE

        self.path = path
        self.size = (width, height)
        self.frame_ms = 1000.0 / fps
        self.rate = STREAM_RATE
        self.lock = threading.Lock()
        # The node writes the audio itself, up to the end of each chunk and before its
        # frames, so the recorder never has to pad with silence ahead of them (padding past
        # the chunk would hide speech that starts there: overlaps are dropped).
        self.recorder = SessionRecorder(path, width, height, fps, STREAM_RATE, audio_lag_ms=0)
        self.recorder.start()
        self._keys = _ChunkKeyframes(self.recorder._video)
        self.recorder._video = self._keys  # SessionRecorder encodes through `_video.encode`
        self.closed = False
        self._offset_ms = 0.0  # added to session pts when the renderer's clock restarted
        self._last_ms: float | None = None
        self._last_key_ms: float | None = None
        self._keyed_frames = 0
        self._pcm: dict[int, tuple[Any, Any]] = {}  # id → (ScheduledUtterance, its PCM at `rate`)

    @property
    def frames(self) -> int:
        return self.recorder.frames_written

    @property
    def frames_in_file(self) -> int:
        """Frames a reader of the file sees now: all once it is closed; while it is open, those
        before the last forced keyframe (a fragment is written when the next one starts)."""
        return self.recorder.frames_written if self.closed else self._keyed_frames

    def write(self, frames: Any, pts_ms: list, scheduled: list, on_frame) -> None:
        """Append a chunk: first the audio sounding from where the written audio ends to
        the end of its last frame (`scheduled`: the session's `ScheduledUtterance`s, on the
        renderer's clock), then its frames."""
        with self.lock:
            if self.closed or not len(pts_ms):
                return
            first = float(pts_ms[0]) + self._offset_ms
            if self._last_ms is not None and first <= self._last_ms:
                # A restarted renderer counts from 0 again: the file's clock goes on.
                self._offset_ms += self._last_ms + self.frame_ms - first
                first = float(pts_ms[0]) + self._offset_ms
            # The audio sounding up to the chunk's end, then its frames. What a cut removed
            # from the queue is not there any more, so it is not written.
            pieces = [(item.start_ms + self._offset_ms, pcm) for item, pcm in self._utterances(scheduled)]
            self.recorder.push_sounding(pieces, float(pts_ms[-1]) + self._offset_ms + self.frame_ms, first)
            if self._last_key_ms is None or first - self._last_key_ms >= KEYFRAME_MIN_MS:
                self._keys.want_key = True
                self._last_key_ms = first
                self._keyed_frames = self.recorder.frames_written  # the fragment before it is complete
            for rgb, pts in zip(frames, pts_ms, strict=True):
                at = float(pts) + self._offset_ms
                self.recorder.push_frame(rgb, at)
                self._last_ms = at
                on_frame()

    def _utterances(self, scheduled: list) -> list[tuple[Any, Any]]:
        """(item, PCM at the stream rate) for each queued item; a resampled one is kept for
        as long as it stays queued, so each is resampled once."""
        from ..video.voice.packets import resample

        known, self._pcm = self._pcm, {}
        for item in scheduled:
            entry = known.get(id(item))
            if entry is None or entry[0] is not item:
                utterance = item.utterance
                entry = (item, resample(utterance.pcm, utterance.sample_rate, self.rate))
            self._pcm[id(item)] = entry
        return list(self._pcm.values())

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


def _next_file(path: Path, width: int, height: int, used: set[Path], numbered: bool) -> Path:
    """`path` the first time; a frame size the session already wrote gets its own file; each
    queued run (`numbered`) gets the next `_0002`, `_0003`… file. A name is free when neither
    this session nor anything on disk has it: the file is created empty here (exclusively), so
    an earlier session's recording (a restart, another session whose id cleans to the same
    name) is never overwritten and two processes never pick the same file."""
    if numbered or path not in used:
        base = path.with_suffix("")
    else:
        base = path.with_name(f"{path.stem}_{width}x{height}")
    numbered_names = (base.with_name(f"{base.name}_{number:04d}.mp4") for number in itertools.count(2))
    for candidate in itertools.chain((path, base.with_suffix(".mp4")), numbered_names):
        if candidate in used:
            continue
        candidate.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(candidate, "xb"):
                return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable: the numbered names never run out")


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
    def IS_CHANGED(cls, **_: Any) -> str:
        return every_run()

    def record(self, frames: FramesValue, filename_prefix: str) -> dict:
        root = recordings_root()
        path = recording_path(root, filename_prefix, frames.session_id)
        chunk = frames.chunk
        pixels = chunk.frames
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even frame sizes; got {width}x{height}")
        session = current_store().get(frames.session_id)
        # Nobody streams this session (a queued Run): each run writes one complete file, as
        # Save Video does (an MP4 is only whole once closed). A streamed session appends every
        # chunk to one file, finished when the session ends.
        per_run = not session.streamed
        key = (path, width, height)
        with session.lock:
            recording = session.recordings.get(key)
            if recording is None:
                target = _next_file(path, width, height, session.recorded_paths, per_run)
                recording = session.recordings[key] = _Recording(target, width, height, frames.fps)
                session.recorded_paths.add(target)
        bar = progress(len(pixels))
        recording.write(pixels, list(chunk.pts_ms), session.scheduled_speech(), lambda: bar.update(1))
        if per_run:
            with session.lock:
                session.recordings.pop(key, None)
            recording.close()
        try:
            subfolder = str(recording.path.parent.relative_to(root.resolve()))
        except ValueError:
            subfolder = ""
        # `frames`: what a reader of the file sees now (every frame reported is in the file);
        # `frames_rendered`: every frame handed to the recorder so far.
        summary = {"filename": recording.path.name, "subfolder": "" if subfolder == "." else subfolder,
                   "type": "output", "frames": recording.frames_in_file, "frames_rendered": recording.frames}
        # `images` + `animated`: what Save Video returns, so the canvas shows the file as a video.
        shown = {k: summary[k] for k in ("filename", "subfolder", "type")}
        return {"ui": {"persona_recording": [summary], "images": [shown], "animated": (True,)}, "result": ()}
