"""Lip-sync measured on a recorded MP4 (issue 9's must-show): real preview renderer, real
espeak audio, real H.264 + AAC file; offsets between each voiced onset in the decoded
audio and the frame where the mouth opens."""

from __future__ import annotations

import pytest

from comfyui_persona.video.backend import SessionSpec
from comfyui_persona.video.voice import VoiceSpec
from comfyui_persona.video.voice.av_sync import measure, mouth_roi, record_speech

SIZE = 256


@pytest.fixture(scope="module")
def spec():
    return SessionSpec("sync", "Sync", {}, SIZE, SIZE, 30.0, seed=3)


def test_mouth_opens_within_45ms_of_each_voiced_onset_p95(tmp_path, spec):
    path = tmp_path / "speech.mp4"
    record_speech(path, spec, VoiceSpec())
    report = measure(path, mouth_roi(spec))
    assert report.audio_onsets >= 15
    assert len(report.offsets_ms) >= report.audio_onsets - 1  # nearly every onset matched
    assert report.stat(95) <= 45.0, report.offsets_ms
    assert abs(report.stat(50, absolute=False)) <= 20.0  # centred, not merely bounded


def test_without_a_mouth_lead_the_mouth_visibly_lags(tmp_path, spec):
    """The same measurement catches a late mouth: no lead → lag of a frame or so."""
    path = tmp_path / "late.mp4"
    record_speech(path, spec, VoiceSpec(), mouth_lead_ms=0.0)
    report = measure(path, mouth_roi(spec))
    assert report.stat(50, absolute=False) > 20.0
