"""The lip-sync meter on synthetic talking clips made from real photos and our own TTS.

`talking_clip` pulls the photo's jaw and lower lip down by a known schedule (the speech
envelope, smoothed without lag) at each frame's time minus a planted offset; the meter
(SCRFD + InsightFace's 106-point landmarks, correlated with the speech envelope) must find
that offset from the pixels and the PCM alone. 16 fps, like the LongLive stream: one frame
is 62.5 ms, and the recovered offsets must be within half of that.
"""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_persona.video.lipsync.meter import MouthMeter, measure_offset, sliding_offsets, speech_envelope
from comfyui_persona.video.lipsync.testing import face_frame, mouth_schedule, spoken, talking_clip

FPS = 16.0
FRAME_MS = 1000.0 / FPS


@pytest.fixture(scope="module")
def meter():
    return MouthMeter(threads=2)


@pytest.fixture(scope="module")
def speech():
    return [spoken("Hello there. I am the persona, and I can talk to you all day long.", start_ms=500.0)]


@pytest.fixture(scope="module")
def photo():
    return face_frame("yaoming.jpg")


@pytest.fixture(scope="module")
def synced(meter, photo, speech):
    """A clip whose mouth follows the speech with no offset, and the meter's openings of it."""
    clip = talking_clip(photo, speech, offset_ms=0.0, fps=FPS, meter=meter)
    return clip, meter.openings(clip.frames)


def test_the_meter_sees_the_mouth_open_as_the_schedule_says(synced):
    clip, opening = synced
    assert np.isfinite(opening).all()
    assert np.corrcoef(opening, clip.opening)[0, 1] > 0.95
    closed, wide = opening[clip.opening == 0].mean(), opening[clip.opening > 0.9].mean()
    assert wide > closed + 0.1  # inner-lip gap / eye distance


@pytest.mark.parametrize("planted_ms", [-80.0, -40.0, 40.0, 80.0])
def test_the_meter_recovers_a_planted_offset(meter, photo, speech, planted_ms):
    clip = talking_clip(photo, speech, offset_ms=planted_ms, fps=FPS, meter=meter)
    result = measure_offset(meter.openings(clip.frames), clip.pts_ms, speech)
    assert abs(result.offset_ms - planted_ms) < FRAME_MS / 2, result
    assert result.confidence > 0.5 and result.correlation > 0.9


def test_another_face_and_a_sub_frame_offset(meter, speech):
    photo = face_frame("gdp.jpg", size=(480, 400), scale=0.8, at=(0, 0))
    clip = talking_clip(photo, speech, offset_ms=25.0, fps=FPS, meter=meter)
    result = measure_offset(meter.openings(clip.frames), clip.pts_ms, speech)
    assert abs(result.offset_ms - 25.0) < FRAME_MS / 2, result


def test_confidence_collapses_when_the_mouth_follows_other_speech(meter, photo, speech, synced):
    other = [spoken("Seven ducks swam over the lake while we waited.", start_ms=500.0)]
    clip, opening = synced
    unrelated = talking_clip(photo, other, fps=FPS, meter=meter)
    n = min(len(clip.frames), len(unrelated.frames))
    good = measure_offset(opening[:n], clip.pts_ms[:n], speech)
    bad = measure_offset(meter.openings(unrelated.frames[:n]), unrelated.pts_ms[:n], speech)
    assert good.confidence > 0.5 and bad.confidence < good.confidence / 2, (good, bad)


def test_sliding_windows_give_the_offset_distribution_of_a_long_clip(synced, speech):
    clip, opening = synced
    windows = sliding_offsets(opening, clip.pts_ms, speech, window_ms=2000.0, hop_ms=500.0, min_confidence=0.3)
    assert len(windows) >= 3
    errors = np.abs(np.array([w.offset_ms for w in windows]))
    assert np.percentile(errors, 95) < FRAME_MS / 2


def test_envelope_and_schedule_follow_the_audio_without_lag():
    burst = np.zeros(22050, np.int16)
    burst[11025:13230] = 10000  # 100 ms of sound starting 500 ms in
    from comfyui_persona.video.lipsync.audio import SpeechAudio

    seg = SpeechAudio(burst, 22050, 1000.0)
    times = np.arange(1400.0, 1700.0, 1.0)
    env = speech_envelope([seg], times, window_ms=20.0)
    assert env[times < 1490].max() == 0 and env[(times > 1512) & (times < 1588)].min() == pytest.approx(10000 / 32768, rel=0.01)
    schedule = mouth_schedule([seg], times)
    assert abs((times * schedule).sum() / schedule.sum() - 1550.0) < 1.0  # centred on the burst: no lag
    assert speech_envelope([], times).max() == 0


def test_a_recorded_mp4_is_measured_through_the_codecs(meter, photo, speech, tmp_path):
    """A talking clip with a planted 40 ms lag written by the session recorder (H.264 + AAC),
    then measured from the file alone: the recording path docs/lipsync.md's thresholds use."""
    from comfyui_persona.video.recording import SessionRecorder

    clip = talking_clip(photo, speech, offset_ms=40.0, fps=FPS, meter=meter)
    height, width = photo.shape[:2]
    recorder = SessionRecorder(tmp_path / "clip.mp4", width, height, FPS)
    recorder.start(origin_ms=float(clip.pts_ms[0]))
    recorder.push_audio(speech[0].pcm, speech[0].start_ms)
    recorder.push_chunk(clip.frames, [int(round(p)) for p in clip.pts_ms])
    recorder.stop()
    from comfyui_persona.video.lipsync.meter import measure_recording

    measured = measure_recording(tmp_path / "clip.mp4", meter, window_ms=2500.0, hop_ms=500.0)
    assert measured.frames_with_face == measured.frames == len(clip.frames)
    assert len(measured.windows) >= 3 and abs(measured.median_offset_ms - 40.0) < FRAME_MS / 2, measured.offsets_ms
    assert measured.p95_abs_offset_ms < 40.0 + FRAME_MS / 2
