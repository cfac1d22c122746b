"""`SessionRecorder`: a session's frames and speech written to MP4 (H.264 + AAC via PyAV)
as they are produced, so a crash loses at most about the last second.

Why fragmented MP4: a plain MP4 needs its index (`moov`) written at the end, so a killed
server leaves an unplayable file. With `movflags=frag_keyframe+empty_moov+default_base_moof`
the header is written first and the media follows in self-contained fragments cut at
every keyframe; the keyframe interval is one second (`gop_size = fps`) and `frag_duration`
caps a fragment at one second, and `flush_packets` pushes each fragment to the file as
soon as it is complete. x264 runs with `tune=zerolatency` (no lookahead, no B-frames), so
a frame leaves the encoder as it goes in instead of ~40 frames later.

Clock: callers push with `pts_ms` on the session clock (the renderer's `Chunk.pts_ms` and
the audio packets' pts); the file's time zero is the first frame pushed. Audio is written
as one continuous track: silence fills gaps, overlapping samples are dropped, and the
track is padded with silence up to `audio_lag_ms` behind the video so the muxer never
holds video back waiting for audio while the persona is quiet.

Thread-safe: `push_frame` / `push_audio` may be called from the render thread and the TTS
thread; one lock guards the container.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import PersonaError

__all__ = ["RecordingError", "RecordingWriteError", "SessionRecorder", "repair_fragments", "sounding"]


def sounding(pieces, origin_ms: float, start: int, end: int, rate: int) -> np.ndarray:
    """Samples `start`..`end` of a file whose time zero is `origin_ms`, at `rate`: what the
    `(start_ms, pcm)` pieces sound there, silence elsewhere. A piece straddling either end is
    cut at the sample (placed with the rounding `SpeechQueue.cut` uses); where pieces overlap
    (they never do on one clock) the later one wins. How the server's recordings and the
    recorder node write a chunk's audio: only what sounds during its frames."""
    out = np.zeros(max(0, end - start), np.int16)
    for start_ms, pcm in pieces:
        first = int(round((start_ms - origin_ms) * rate / 1000.0))
        lo, hi = max(start, first), min(end, first + len(pcm))
        if lo < hi:
            out[lo - start : hi - start] = pcm[lo - first : hi - first]
    return out


class RecordingError(PersonaError, RuntimeError):
    """The recorder was used wrongly (not started, bad frame size, time going backwards)."""

    code = "recording"


class RecordingWriteError(RecordingError):
    """Writing the file failed (disk full, quota, I/O error): the recorder closed it, cut
    back to its last whole fragment (`repair_fragments`), and takes nothing more."""


def repair_fragments(path: str | Path) -> int:
    """Cut a fragmented MP4 back to its last whole box: what a full disk or a killed writer
    left half-written at the end goes, every complete fragment (moof + mdat) stays. Returns
    the size kept (0: not an MP4 with a complete header, left as it is).

    The file is a sequence of top-level boxes, each `[u32 size][4-char type]` (size 1: a
    u64 size follows; size 0: "to the end", which only a writer that stopped can leave)."""
    import struct

    path = Path(path)
    size = path.stat().st_size
    kept, pos, last_moof = 0, 0, None
    with path.open("rb") as handle:
        while pos + 8 <= size:
            handle.seek(pos)
            head = handle.read(16)
            box_size, kind = struct.unpack(">I4s", head[:8])
            if box_size == 1 and len(head) >= 16:
                box_size = struct.unpack(">Q", head[8:16])[0]
            if box_size < 8 or pos + box_size > size:
                break  # a box cut off by the failure (or garbage): everything from here goes
            end = pos + box_size
            if kind == b"moof":
                last_moof = pos
            elif kind == b"mdat" and last_moof is not None:
                kept, last_moof = end, None  # a whole fragment
            elif kind in (b"ftyp", b"moov", b"free", b"mfra", b"sidx") and last_moof is None:
                kept = end
            pos = end
    if kept == 0:
        return 0
    if kept < size:
        with path.open("r+b") as handle:
            handle.truncate(kept)
            handle.flush()
            os.fsync(handle.fileno())
    return kept


class SessionRecorder:
    """Record one session to `path` (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        audio_rate: int = 22050,
        *,
        crf: int = 23,
        preset: str = "veryfast",
        audio_lag_ms: int = 500,
    ) -> None:
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise RecordingError(f"size {width}x{height} must be positive and even (H.264 yuv420p)")
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 1 <= fps <= 120):
            raise RecordingError(f"fps={fps!r} must be in [1, 120]")
        if audio_rate not in (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000):
            raise RecordingError(f"audio_rate={audio_rate} is not an AAC sampling rate")
        self.path = Path(path)
        self.width, self.height, self.fps, self.audio_rate = (
            int(width),
            int(height),
            float(fps),
            int(audio_rate),
        )
        self.crf, self.preset, self.audio_lag_ms = int(crf), preset, int(audio_lag_ms)
        self._lock = threading.Lock()
        self._container = None
        self._origin_ms: float | None = None
        self._last_pts = -1
        self._audio_cursor = 0  # samples written (file clock)
        self.frames_written = 0

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        return self._container is not None

    def start(self, origin_ms: float | None = None) -> None:
        """Open the file. `origin_ms`: the session pts that becomes the file's time zero
        (default: the first frame pushed; audio pushed before it waits for it)."""
        import av

        with self._lock:
            if self._container is not None:
                raise RecordingError(f"already recording to {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(
                str(self.path),
                mode="w",
                format="mp4",
                options={
                    "movflags": "frag_keyframe+empty_moov+default_base_moof",
                    "frag_duration": "1000000",  # µs
                    "flush_packets": "1",
                    "max_interleave_delta": "1000000",  # µs
                    # AAC's encoder emits 1024 priming samples at negative pts; "auto"
                    # shifts *both* streams by them (46.4 ms at 22050 Hz), which keeps
                    # A/V in sync in the file (checked by tests/test_recording.py with
                    # a click and a flash). "disabled" would leave audio 46 ms late.
                    "avoid_negative_ts": "auto",
                },
            )
            gop = max(1, int(round(self.fps)))
            video = container.add_stream(
                "libx264",
                rate=Fraction(self.fps).limit_denominator(1001),
                options={"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency"},
            )
            video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
            video.codec_context.gop_size = gop
            video.codec_context.time_base = Fraction(1, 1000)
            video.time_base = Fraction(1, 1000)
            audio = container.add_stream("aac", rate=self.audio_rate, layout="mono")
            audio.time_base = Fraction(1, self.audio_rate)
            self._container, self._video, self._audio = container, video, audio
            self._origin_ms = None if origin_ms is None else float(origin_ms)
            self._last_pts, self._audio_cursor, self.frames_written = -1, 0, 0
            self._early_audio: list[tuple[np.ndarray, float]] = []

    def stop(self) -> Path:
        """Flush the encoders and close the file; returns its path."""
        with self._lock, self._writes():
            container = self._require()
            if self._origin_ms is None:  # no frame ever came: audio starts the file
                self._origin_ms = min((at for _, at in self._early_audio), default=0.0)
                for early, at in self._early_audio:
                    self._place_audio(early, at)
            self._fill_silence(self._last_pts + int(round(1000.0 / self.fps)))
            for stream in (self._video, self._audio):
                for packet in stream.encode(None):
                    container.mux(packet)
            container.close()
            self._container = None
        return self.path

    def __enter__(self) -> SessionRecorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.recording:
            self.stop()

    # --- input -------------------------------------------------------------------------

    def push_frame(self, rgb: np.ndarray, pts_ms: float) -> None:
        """One RGB uint8 frame (H, W, 3) shown at `pts_ms` on the session clock."""
        import av

        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise RecordingError(
                f"frame {rgb.shape} {rgb.dtype} must be uint8 ({self.height}, {self.width}, 3)"
            )
        with self._lock, self._writes():
            container = self._require()
            if self._origin_ms is None:
                self._origin_ms = float(pts_ms)
                for early, at in self._early_audio:
                    self._place_audio(early, at)
                self._early_audio = []
            pts = int(round(pts_ms - self._origin_ms))
            if pts < 0:
                raise RecordingError(f"frame pts {pts_ms} ms is before the recording's origin")
            if pts <= self._last_pts:
                raise RecordingError(f"frame pts {pts_ms} ms is not after the previous frame's")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in self._video.encode(frame):
                container.mux(packet)
            self._last_pts = pts
            self.frames_written += 1
            self._fill_silence(pts - self.audio_lag_ms)

    def push_chunk(self, frames: np.ndarray, pts_ms: list[int]) -> None:
        """All frames of a renderer `Chunk` (`chunk.frames`, `chunk.pts_ms`)."""
        for rgb, pts in zip(frames, pts_ms, strict=True):
            self.push_frame(rgb, pts)

    def push_audio(self, pcm: np.ndarray, pts_ms: float) -> None:
        """int16 mono PCM at `audio_rate` whose first sample plays at `pts_ms`."""
        pcm = np.array(pcm, dtype=np.int16).reshape(-1)  # a copy: the caller may reuse its buffer
        with self._lock, self._writes():
            self._require()
            if self._origin_ms is None:
                self._early_audio.append((pcm, float(pts_ms)))
            else:
                self._place_audio(pcm, float(pts_ms))

    def push_sounding(self, pieces, until_ms: float, origin_ms: float) -> None:
        """Audio from where the written audio ends up to `until_ms` (session clock): what the
        `(start_ms, pcm at audio_rate)` pieces sound there, silence around them (`sounding`).
        For audio known per chunk: called before the chunk's frames, with `origin_ms` its
        first frame's pts (the file's time zero when no frame has come yet)."""
        with self._lock, self._writes():
            self._require()
            if self._origin_ms is None:
                self._origin_ms = float(origin_ms)
                for early, at in self._early_audio:
                    self._place_audio(early, at)
                self._early_audio = []
            end = int(round((until_ms - self._origin_ms) * self.audio_rate / 1000.0))
            if end > self._audio_cursor:
                self._write_audio(sounding(pieces, self._origin_ms, self._audio_cursor, end, self.audio_rate))

    # --- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _writes(self):
        """Around every encode and mux: a write that fails (a full disk) closes the file at
        its last whole fragment and raises `RecordingWriteError`; nothing more is taken."""
        try:
            yield
        except OSError as exc:
            container, self._container = self._container, None
            if container is not None:
                with contextlib.suppress(Exception):  # the close writes too, and may fail again
                    container.close()
            with contextlib.suppress(OSError):
                repair_fragments(self.path)
            raise RecordingWriteError(f"writing {self.path.name} failed: {exc}") from exc

    def _place_audio(self, pcm: np.ndarray, pts_ms: float) -> None:
        assert self._origin_ms is not None
        start = int(round((pts_ms - self._origin_ms) * self.audio_rate / 1000.0))
        if start < self._audio_cursor:  # overlaps what is written: drop the overlap
            pcm = pcm[self._audio_cursor - start :]
            start = self._audio_cursor
        if start > self._audio_cursor:
            self._write_audio(np.zeros(start - self._audio_cursor, np.int16))
        if pcm.size:
            self._write_audio(pcm)

    def _require(self):
        if self._container is None:
            raise RecordingError("not recording: call start() first")
        return self._container

    def _fill_silence(self, until_ms: float) -> None:
        target = int(round(until_ms * self.audio_rate / 1000.0))
        if target > self._audio_cursor:
            self._write_audio(np.zeros(target - self._audio_cursor, np.int16))

    def _write_audio(self, pcm: np.ndarray) -> None:
        import av

        step = self.audio_rate  # at most 1 s per frame
        for first in range(0, len(pcm), step):
            part = np.ascontiguousarray(pcm[first : first + step]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(part, format="s16", layout="mono")
            frame.sample_rate = self.audio_rate
            frame.pts, frame.time_base = self._audio_cursor, Fraction(1, self.audio_rate)
            for packet in self._audio.encode(frame):
                self._container.mux(packet)
            self._audio_cursor += part.shape[1]
