"""Measuring lip-sync on a recorded MP4, from the file alone.

Audio side: the decoded track (timestamps from the container, so the AAC priming shift
is accounted for exactly as a player does); a *voiced-segment onset* is the first 5 ms
window whose RMS exceeds `onset_fraction` of the track's 99th-percentile window RMS after
at least `min_silence_ms` of silence. Video side: mouth opening per frame = the number of
pixels inside a mouth region with the colours of an open mouth's interior (dark red
cavity, tongue); a *mouth onset* is the first frame (its pts) where the opening rises above
`open_fraction` of its range after at least two closed frames. Each audio onset is paired
with the nearest mouth onset within `match_ms`; the offset is mouth − audio (positive:
the mouth opens after the sound starts).

Why onsets after silence and not every phoneme: inside a word the sound never stops, so
no audio-only detector finds phoneme boundaries reliably; after a pause both the sound
and the mouth start from rest, so each side's onset is unambiguous. Test texts are made
of short vowel-initial sentences so every onset is a vowel whose shape opens the mouth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SyncReport", "audio_onsets", "decode_audio", "measure", "mouth_onsets", "mouth_series"]


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
    """Start times (ms) of voiced segments that follow at least `min_silence_ms` of quiet."""
    if samples.size < 2:
        return []
    rate = 1000.0 / float(np.median(np.diff(times_ms[: min(len(times_ms), 4096)])))
    n = max(1, int(round(rate * window_ms / 1000.0)))
    count = len(samples) // n
    rms = np.sqrt(np.mean(samples[: count * n].reshape(count, n) ** 2, axis=1))
    loud = float(np.percentile(rms, 99))
    if loud <= 1e-4:
        return []
    active = rms > onset_fraction * loud
    need = int(np.ceil(min_silence_ms / window_ms))
    out, quiet = [], need  # the track's start counts as silence
    for i, on in enumerate(active):
        if on:
            if quiet >= need:
                out.append(float(times_ms[i * n]))
            quiet = 0
        else:
            quiet += 1
    return out


def mouth_series(
    path: str | Path, roi: tuple[int, int, int, int], tolerance: int = 40, static_fraction: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """(pts ms, open-mouth pixel count in `roi` = (y0, y1, x0, x1)) for every video frame.

    Pixels with the mouth-interior colour in more than `static_fraction` of the frames are
    not the mouth (a look's hair or clothes reaching into the region) and are left out."""
    import av

    y0, y1, x0, x1 = roi
    pts, masks = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            rgb = frame.to_ndarray(format="rgb24")[y0:y1, x0:x1]
            pts.append(float(frame.pts * frame.time_base) * 1000.0)
            masks.append(open_mouth_mask(rgb, tolerance))
    if not masks:
        return np.zeros(0), np.zeros(0)
    stack = np.stack(masks)
    moving = stack.mean(axis=0) <= static_fraction
    return np.asarray(pts), (stack & moving).sum(axis=(1, 2)).astype(np.float64)


def open_mouth_mask(rgb: np.ndarray, tolerance: int = 40) -> np.ndarray:
    """Pixels coloured like the preview character's open mouth: within `tolerance` (per
    channel) of the dark-red cavity (120, 40, 48) or the tongue (226, 110, 118), and with
    blue not far below green. The second test drops the anti-aliased edge between skin and
    the dark lip line, which on darker skins falls inside the colour box (skin and ink
    have blue well below green; the cavity and tongue have it above)."""
    rgb = rgb.astype(np.int16)
    out = np.zeros(rgb.shape[:2], dtype=bool)
    for colour in ((120, 40, 48), (226, 110, 118)):
        out |= np.all(np.abs(rgb - np.array(colour, dtype=np.int16)) < tolerance, axis=-1)
    return out & (rgb[..., 2] > rgb[..., 1] - 12)


def mouth_onsets(
    pts_ms: np.ndarray, counts: np.ndarray, open_fraction: float = 0.15, closed_fraction: float = 0.08
) -> list[float]:
    """Pts of frames where the mouth opens: the opening rises above `open_fraction` of its
    range after at least two frames below `closed_fraction` (hysteresis, so pixel noise
    around one threshold cannot fake an onset)."""
    if counts.size < 3:
        return []
    low, high = float(np.percentile(counts, 5)), float(np.percentile(counts, 99))
    if high - low < 4:
        return []
    hi, lo = low + open_fraction * (high - low), low + closed_fraction * (high - low)
    out, closed_run = [], 0
    for i, value in enumerate(counts):
        if value < lo:
            closed_run += 1
        elif value > hi:
            if closed_run >= 2:
                out.append(float(pts_ms[i]))
            closed_run = 0
    return out


@dataclass
class SyncReport:
    """Offsets (ms, mouth − audio) of matched onsets, and what was left unmatched."""

    offsets_ms: list[float]
    audio_onsets: int
    mouth_onsets: int
    unmatched_audio: int

    def stat(self, q: float, absolute: bool = True) -> float:
        values = np.abs(self.offsets_ms) if absolute else np.asarray(self.offsets_ms)
        return float(np.percentile(values, q)) if len(values) else float("nan")


def measure(path: str | Path, roi: tuple[int, int, int, int], match_ms: float = 150.0) -> SyncReport:
    """Pair every voiced-segment onset in the file's audio with the nearest mouth onset."""
    a = audio_onsets(*decode_audio(path))
    m = mouth_onsets(*mouth_series(path, roi))
    offsets, unmatched = [], 0
    marr = np.asarray(m)
    for onset in a:
        if marr.size == 0:
            unmatched += 1
            continue
        j = int(np.argmin(np.abs(marr - onset)))
        if abs(marr[j] - onset) <= match_ms:
            offsets.append(float(marr[j] - onset))
        else:
            unmatched += 1
    return SyncReport(offsets, len(a), len(m), unmatched)


#: Short vowel-initial sentences: each starts from rest with a shape that shows the open
#: mouth (C or D). Rounded vowels (E: "Odd", F: "Oh", "Ooh") are left out: they expose so
#: few cavity pixels (~10 of ~100 at 256 px) that the pixel metric cannot tell them from a
#: closed mouth; the renderer times them exactly like the others.
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
