"""Measuring lip-sync on a recorded MP4, from the file alone.

Audio side: the decoded track (timestamps from the container, so the AAC priming shift
is accounted for exactly as a player does); a *voiced-segment onset* is the first sample at
which the RMS over the `window_ms` before it exceeds `onset_fraction` of the track's loud
level, after at least `min_silence_ms` of quiet. Video side: the mouth's *area* per frame
(how much of the mouth region does not look like skin, `mouth_series`); a *mouth onset*
is where the area, rising from rest, gets half way to the first peak of that opening,
interpolated between frames (`mouth_onsets`). Each audio onset is paired with the nearest
mouth onset within `match_ms`; the offset is mouth − audio (positive: the mouth opens
after the sound starts).

Why onsets after silence and not every phoneme: inside a word the sound never stops, so
no audio-only detector finds phoneme boundaries reliably; after a pause both the sound
and the mouth start from rest, so each side's onset is unambiguous. Test texts are made
of short vowel-initial sentences so every onset is a vowel whose shape opens the mouth.

Why each mouth onset is timed against its own opening, between frames: a fixed threshold
on the whole recording's range times a shape that barely opens (C, "Up", "Other") late
and unstably. Its opening only just clears the threshold, so a millisecond of difference
in the audio (espeak-ng's timings move that much with what the process said before) moved
its detected onset by two frames and the p95 by 40 ms. Timed against its own peak and
interpolated, an onset moves with the audio by about as much as the audio moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "MouthOnset",
    "SyncReport",
    "audio_onsets",
    "decode_audio",
    "measure",
    "mouth_onsets",
    "mouth_series",
]


def decode_audio(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(times in ms of each sample, samples as float in [-1, 1]) of the first audio track."""
    import av

    times, samples = [], []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            data = data.mean(axis=0) if data.ndim == 2 and data.shape[0] > 1 else data.reshape(-1)
            if data.dtype.kind == "i":
                data = data / 32768.0
            start = float(frame.pts * frame.time_base) * 1000.0
            times.append(start + np.arange(len(data)) * 1000.0 / frame.sample_rate)
            samples.append(data.astype(np.float64))
    if not samples:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(times), np.concatenate(samples)


def audio_onsets(
    times_ms: np.ndarray,
    samples: np.ndarray,
    *,
    window_ms: float = 5.0,
    min_silence_ms: float = 120.0,
    onset_fraction: float = 0.05,
) -> list[float]:
    """Times (ms) at which a voiced segment has become audible after at least
    `min_silence_ms` of quiet: the first sample at which the RMS over the `window_ms`
    ending there exceeds `onset_fraction` of the loud level (the 99th percentile of that
    RMS over the track). Sample resolution, so a sentence that starts a fraction of a
    millisecond later measures that much later, not a whole window."""
    if samples.size < 2:
        return []
    rate = 1000.0 / float(np.median(np.diff(times_ms[: min(len(times_ms), 4096)])))
    n = max(1, int(round(rate * window_ms / 1000.0)))
    if samples.size < n:
        return []
    energy = np.concatenate(([0.0], np.cumsum(np.square(samples, dtype=np.float64))))
    rms = np.sqrt(np.maximum(energy[n:] - energy[:-n], 0.0) / n)  # rms[j]: samples j .. j+n-1
    loud = float(np.percentile(rms, 99))
    if loud <= 1e-4:
        return []
    active = np.flatnonzero(rms > onset_fraction * loud)
    quiet = int(np.ceil(min_silence_ms * rate / 1000.0))
    # A window position that follows more than `quiet` quiet ones starts a segment; the
    # track's start counts as quiet.
    starts = active[np.diff(active, prepend=-quiet - 1) > quiet]
    return [float(times_ms[j + n - 1]) for j in starts]


def mouth_series(
    path: str | Path, roi: tuple[int, int, int, int], *, noise: float = 10.0, full: float = 120.0
) -> tuple[np.ndarray, np.ndarray]:
    """(pts ms, mouth area) for every video frame: how much of `roi` = (y0, y1, x0, x1)
    does not look like skin, in pixels.

    Each pixel counts by the distance of its colour from the region's dominant one (the
    skin: the median over every pixel of every frame), in RGB units: not at all within
    `noise` (H.264 noise on flat skin), fully from `full` on (the mouth's interior is
    90–235 away from the built-in looks' skins), in proportion between. Why an area and not
    a count of the mouth-interior colours: lips, teeth and cavity all grow with the
    opening, anti-aliased edge pixels count in part and a head swaying inside the region
    does not change the sum, so the area follows the opening smoothly, for a shape that
    barely opens as for a wide one, at 256 px too. Pixels that never change (hair reaching
    into the region) add a constant that `mouth_onsets` subtracts."""
    import av

    if not 0.0 <= noise < full:
        raise ValueError(f"need 0 <= noise < full, got noise={noise!r}, full={full!r}")
    y0, y1, x0, x1 = roi
    pts, crops = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            crops.append(frame.to_ndarray(format="rgb24")[y0:y1, x0:x1])
            pts.append(float(frame.pts * frame.time_base) * 1000.0)
    if not crops:
        return np.zeros(0), np.zeros(0)
    stack = np.stack(crops).astype(np.float32)
    skin = np.median(stack.reshape(-1, 3), axis=0)
    distance = np.sqrt(np.square(stack - skin).sum(axis=-1))
    weight = np.clip((distance - noise) / (full - noise), 0.0, 1.0)
    return np.asarray(pts), weight.sum(axis=(1, 2)).astype(np.float64)


@dataclass(frozen=True)
class MouthOnset:
    """One mouth opening from rest (ms on the file's clock).

    `ms`: when the mouth is seen half open. The moment its area crosses half its opening,
    interpolated between the frames around it, plus half a frame period: a frame stays
    on screen for one period, so what it shows is seen half a period late on average
    (the mouth lead's half-frame term, `SpeechQueue`, is there for that).
    `frame_ms`: the pts of the first frame that shows it at least half open, i.e. whole
    frames as a viewer sees them; it lands up to half a frame either side of `ms`."""

    ms: float
    frame_ms: float


def mouth_onsets(
    pts_ms: np.ndarray,
    opening: np.ndarray,
    *,
    rise_fraction: float = 0.5,
    open_fraction: float = 0.15,
    closed_fraction: float = 0.08,
    peak_ms: float = 150.0,
) -> list[MouthOnset]:
    """Where the mouth opens from rest, each opening timed against its own size.

    Found on the whole series' range (low: 5th, high: 99th percentile): a rise after at
    least two frames below `closed_fraction` of the range that goes above `open_fraction`
    within `peak_ms` (hysteresis, so pixel noise cannot fake an onset). Timed on its own:
    from the foot of the rise (the last closed frame before the area starts growing), its
    peak is the first local maximum within `peak_ms`, and the onset is where the area gets
    `rise_fraction` of the way from the foot to that peak, interpolated linearly between
    frames (`MouthOnset`). A shape that barely opens is so timed like a wide one, and the
    onset moves continuously with the mouth's timing."""
    if not 0.0 < rise_fraction < 1.0:
        raise ValueError(f"rise_fraction={rise_fraction!r} must be in (0, 1)")
    if not 0.0 <= closed_fraction < open_fraction <= 1.0:
        raise ValueError(
            f"need 0 <= closed_fraction < open_fraction <= 1, got {closed_fraction!r} and {open_fraction!r}"
        )
    pts = np.asarray(pts_ms, dtype=np.float64)
    values = np.asarray(opening, dtype=np.float64)
    if values.size < 3:
        return []
    low, high = float(np.percentile(values, 5)), float(np.percentile(values, 99))
    if high - low < 4:
        return []
    closed = low + closed_fraction * (high - low)
    present = low + open_fraction * (high - low)
    half_frame = 0.5 * float(np.median(np.diff(pts)))
    out, closed_run = [], 0
    for i, value in enumerate(values):
        if value < closed:
            closed_run += 1
            continue
        if closed_run >= 2:
            foot = i - 1  # a small opening starts to grow below `closed`
            while foot > i - closed_run and values[foot - 1] < values[foot]:
                foot -= 1
            onset = _time_rise(pts, values, foot, i - 1, rise_fraction, present, peak_ms)
            if onset is not None:
                out.append(MouthOnset(onset[0] + half_frame, onset[1]))
        closed_run = 0
    return out


def _time_rise(
    pts: np.ndarray,
    values: np.ndarray,
    foot: int,
    last_closed: int,
    fraction: float,
    present: float,
    peak_ms: float,
) -> tuple[float, float] | None:
    """(interpolated time, pts of the first frame at or above) of the crossing of
    `fraction` of the way from the rise's foot to its first peak within `peak_ms` of the
    last closed frame; None if the rise stays below `present` there."""
    window = last_closed + 1
    while window + 1 < len(values) and pts[window + 1] - pts[last_closed] <= peak_ms:
        window += 1
    if values[last_closed + 1 : window + 1].max() < present:
        return None
    peak = foot + 1
    while peak < window and values[peak + 1] >= values[peak]:
        peak += 1
    level = values[foot] + fraction * (values[peak] - values[foot])
    k = foot + 1
    while values[k] < level:  # stops at `peak` at the latest
        k += 1
    before, after = values[k - 1], values[k]
    share = (level - before) / (after - before)
    return float(pts[k - 1] + share * (pts[k] - pts[k - 1])), float(pts[k])


@dataclass
class SyncReport:
    """Offsets (ms, mouth − audio) of matched onsets, and what was left unmatched.

    `offsets_ms` use each mouth onset's interpolated time (`MouthOnset.ms`), the figure
    to judge sync by: it moves with the audio/video timing by as much as the timing moved.
    `frame_offsets_ms` use the first frame that shows it (`MouthOnset.frame_ms`): what a
    viewer sees at this frame rate, with up to half a frame of luck either way."""

    offsets_ms: list[float]
    frame_offsets_ms: list[float]
    audio_onsets: int
    mouth_onsets: int
    unmatched_audio: int

    def stat(self, q: float, absolute: bool = True, whole_frames: bool = False) -> float:
        values = np.asarray(self.frame_offsets_ms if whole_frames else self.offsets_ms)
        values = np.abs(values) if absolute else values
        return float(np.percentile(values, q)) if len(values) else float("nan")


def measure(path: str | Path, roi: tuple[int, int, int, int], match_ms: float = 150.0) -> SyncReport:
    """Pair every voiced-segment onset in the file's audio with the nearest mouth onset."""
    audio = audio_onsets(*decode_audio(path))
    mouth = mouth_onsets(*mouth_series(path, roi))
    times = np.asarray([m.ms for m in mouth])
    offsets, frame_offsets, unmatched = [], [], 0
    for onset in audio:
        j = int(np.argmin(np.abs(times - onset))) if times.size else -1
        if j < 0 or abs(times[j] - onset) > match_ms:
            unmatched += 1
            continue
        offsets.append(float(times[j] - onset))
        frame_offsets.append(mouth[j].frame_ms - onset)
    return SyncReport(
        offsets_ms=offsets,
        frame_offsets_ms=frame_offsets,
        audio_onsets=len(audio),
        mouth_onsets=len(mouth),
        unmatched_audio=unmatched,
    )


#: Short vowel-initial sentences: each starts from rest with a shape that opens the mouth
#: (C or D). Rounded vowels (E: "Odd", F: "Oh", "Ooh") are left out: their small, narrow
#: opening is the measurement's weakest case (about half of them are found at all); the
#: renderer times them exactly like the others.
SYNC_TEXT = "Ah. Eye. Up. Egg. Ice. Out. Arm. Answer. Ever. Add. Ask. Idle. Other. Apple. Arch. Aim."


def mouth_roi(spec: object, chunk_frames: int = 4) -> tuple[int, int, int, int]:
    """Where the preview character's mouth is for `spec` (a `SessionSpec`): the pixels
    that differ between two identical renders of the same seed, one with an open mouth,
    padded by 1/80 of the height for sway. The measurement then reads only the MP4."""
    from ..preview import PreviewRenderer

    renders = []
    for speaking in (False, True):
        renderer = PreviewRenderer(chunk_frames=chunk_frames)
        renderer.start_session(spec)  # type: ignore[arg-type]
        if speaking:
            renderer.set_speech([(0, "D")], 0)
        renders.append(np.concatenate([renderer.next_chunk().frames for _ in range(8)]))
    changed = np.any(renders[0] != renders[1], axis=-1).any(axis=0)
    ys, xs = np.nonzero(changed)
    if ys.size == 0:
        raise RuntimeError("the renderer's mouth did not change when asked to speak")
    height, width = changed.shape
    pad = max(2, height // 80)
    return (
        max(0, int(ys.min()) - pad),
        min(height, int(ys.max()) + pad + 1),
        max(0, int(xs.min()) - pad),
        min(width, int(xs.max()) + pad + 1),
    )


def record_speech(
    path: str | Path,
    spec: object,
    voice: object,
    text: str = SYNC_TEXT,
    *,
    mouth_lead_ms: float | None = None,
    chunk_frames: int = 4,
) -> float:
    """Render `text` spoken by the real preview renderer with real TTS audio through
    `SpeechDriver`, recording to `path`; returns the wall time taken (s)."""
    import time

    from ..preview import PreviewRenderer
    from ..recording import SessionRecorder
    from .base import STREAM_RATE
    from .driver import SpeechDriver

    renderer = PreviewRenderer(chunk_frames=chunk_frames)
    renderer.start_session(spec)  # type: ignore[arg-type]
    fps = float(spec.fps)  # type: ignore[attr-defined]
    recorder = SessionRecorder(path, spec.width, spec.height, fps, STREAM_RATE)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    recorder.start()
    driver = SpeechDriver(renderer, fps, voice, recorder=recorder, lead_ms=150, mouth_lead_ms=mouth_lead_ms)  # type: ignore[arg-type]
    for _ in range(3):  # a little idle first, as in a live session
        driver.next_chunk()
    for _ in driver.say(text):
        pass
    while driver.queue.speaking(driver.next_frame_ms - 300):
        driver.next_chunk()
    recorder.stop()
    return time.perf_counter() - t0
