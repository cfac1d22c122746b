"""The playout-side A/V meter's assembly (benchmarks/browser_media.PlayoutCapture), without a
browser: what the page's probe returns (pictures with their display times on performance.now(),
audio samples with their AudioContext frames and the context's output timestamps) is built here
with a known offset between each sound and its mouth opening, written to the lossless file and
measured by video/voice/av_sync.py's meter, which must read that offset back, either sign, and
with the audio clock's offset to performance.now() taken into account."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from browser_media import PlayoutCapture

RATE = 48_000
FRAME_MS = 1000 / 24
SKIN, MOUTH = (210, 160, 130), (90, 20, 30)
ONSETS_S = [1.0, 2.0, 3.0, 4.0, 5.0]


def _probe(mouth_after_ms: float, clock_offset_ms: float) -> dict:
    """The probe's answer: a sine burst at each of ONSETS_S (context time), the mouth shown open
    from the picture displayed `mouth_after_ms` after it (performance.now() = context ms + offset)."""
    h, w = 12, 24
    frames, crops = [], []
    t = 300.0 + clock_offset_ms
    while t < 6000 + clock_offset_ms:
        crop = np.empty((h, w, 4), np.uint8)
        crop[..., :3], crop[..., 3] = SKIN, 255
        ctx_ms = t - clock_offset_ms
        if any(0 <= ctx_ms - (s * 1000 + mouth_after_ms) < 300 for s in ONSETS_S):
            crop[3:9, 4:20, :3] = MOUTH
        frames.append([t, t - 8.0, t - 16.0])
        crops.append(crop)
        t += FRAME_MS
    samples = np.zeros(6 * RATE, np.float32)
    for s in ONSETS_S:
        start = int(s * RATE)
        samples[start : start + int(0.3 * RATE)] = 0.5 * np.sin(np.arange(int(0.3 * RATE)) * 2 * np.pi * 220 / RATE)
    samples = np.pad(samples, (0, -samples.size % 4096))  # whole worklet batches
    batches = [[frame, 4096] for frame in range(0, samples.size, 4096)]
    clock = [[c, c * 1000 + clock_offset_ms] for c in np.arange(0.5, 6.0, 0.05)]
    return {"frames": frames, "crops": base64.b64encode(np.stack(crops).tobytes()).decode(),
            "audioFrames": batches, "samples": base64.b64encode(samples.astype("<f4").tobytes()).decode(),
            "clock": clock, "missed": 0, "outputLatency": 0.032, "playout": 0.03}


def _aligned(mouth_after_ms: float) -> float:
    """The first display time on the 24 fps grid at or after the opening, less the opening."""
    grid = 300.0 + FRAME_MS * np.ceil((1000.0 + mouth_after_ms - 300.0) / FRAME_MS)
    return grid - 1000.0


@pytest.mark.parametrize(("mouth_after_ms", "clock_offset_ms"), [(30.0, 12345.6), (-50.0, -777.0), (0.0, 0.0)])
def test_the_assembled_capture_measures_the_offset_it_was_built_with(tmp_path, mouth_after_ms, clock_offset_ms):
    from comfyui_persona.video.voice.av_sync import measure

    capture = PlayoutCapture(_probe(mouth_after_ms, clock_offset_ms), (0, 12, 0, 24), RATE)
    assert capture.clock_offset_ms == pytest.approx(clock_offset_ms)
    assert capture.element_playout_delay_ms == pytest.approx(30.0)
    path = capture.write(tmp_path / "played.mkv", RATE)
    report = measure(path, (0, 12, 0, 24))
    assert report.audio_onsets == len(ONSETS_S)
    assert len(report.offsets_ms) == len(ONSETS_S), report
    # Every opening is a step at the first picture shown at or after its time: the meter's
    # onset (half way up, plus half a frame) is that picture's display time.
    expected = _aligned(mouth_after_ms)
    assert np.allclose(report.offsets_ms, expected, atol=1.5), (report.offsets_ms, expected)
