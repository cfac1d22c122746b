"""Session recorder: appends every rendered chunk of a session to one MP4 file.

The file is a fragmented MP4 (`frag_keyframe+empty_moov`, a keyframe at the start of every
chunk), so it plays while it grows (up to the chunk before the last one written) and stays
playable if the process dies mid-session: nothing waits for a final `moov` box. Inside ComfyUI it lands in ComfyUI's output folder (and shows in the
node's `ui` output); headless, in $PERSONA_RECORDINGS_DIR or ./recordings.
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
    """One open MP4 (H.264 when the bundled FFmpeg has it, else MPEG-4 part 2)."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.size = (width, height)
        self.frames = 0
        self.lock = threading.Lock()
        # A fragment per chunk (each chunk starts with a keyframe), written through at once.
        self.container = av.open(str(path), "w", format="mp4",
                                 options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                          "flush_packets": "1"})
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        rate = max(1, round(fps))
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.gop_size = rate  # at least a keyframe a second on long chunks
        if codec == "libx264":
            self.stream.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}

    def write(self, frames, on_frame) -> None:
        import av

        with self.lock:
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                frame.pts = self.frames
                if i == 0:
                    frame.pict_type = av.video.frame.PictureType.I
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
                self.frames += 1
                on_frame()

    def close(self) -> None:
        with self.lock:
            if self.container is None:
                return
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
            self.container = None


class PersonaSessionRecorder:
    """Records the session's stream to an MP4 file, chunk after chunk."""

    DESCRIPTION = (
        "Session recorder: appends each rendered chunk to <output>/<prefix>_<session>.mp4 (fragmented MP4: "
        "playable while it grows). A new frame size starts a new file."
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
        pixels = frames.chunk.frames
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        if width % 2 or height % 2:
            raise ValueError(f"H.264/MPEG-4 need even frame sizes; got {width}x{height}")
        session = current_store().get(frames.session_id)
        key = f"recorder:{path}:{width}x{height}"
        with session.lock:
            recording = session.peek(key)
            if recording is None:
                recording = _Recording(path if not session.peek(f"recorder-used:{path}") else
                                       path.with_name(f"{path.stem}_{width}x{height}.mp4"), width, height, frames.fps)
                session.replace(key, recording)
                session.resource(f"recorder-used:{path}", lambda: True)
        bar = progress(len(pixels))
        recording.write(pixels, lambda: bar.update(1))
        try:
            subfolder = str(recording.path.parent.relative_to(root.resolve()))
        except ValueError:
            subfolder = ""
        summary = {"filename": recording.path.name, "subfolder": "" if subfolder == "." else subfolder,
                   "type": "output", "frames": recording.frames}
        return {"ui": {"persona_recording": [summary]}, "result": ()}
