"""SessionRecorder: MP4 (H.264 + AAC) written incrementally, in sync, crash-tolerant."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading

import av
import numpy as np
import pytest

from comfyui_persona.video.recording import RecordingError, SessionRecorder
from comfyui_persona.video.voice import VoiceSpec, get_synthesizer

FPS = 30
SIZE = 96


def _frame(i: int, bright: bool = False) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[:, :, 1] = (i * 3) % 200
    if bright:
        img[:] = 255
    return img


def _decode(path):
    with av.open(str(path)) as c:
        video = [float(f.time) for f in c.decode(c.streams.video[0])]
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.audio[0]))
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0)
        audio_start = float(frames[0].time) if frames else 0.0
        rate = frames[0].sample_rate if frames else 0
    return video, audio, audio_start, rate


def test_recording_has_duration_frame_count_and_speech(tmp_path):
    speech = get_synthesizer().synthesize("Recording works, and you can hear me.", VoiceSpec())
    path = tmp_path / "session.mp4"
    with SessionRecorder(path, SIZE, SIZE, FPS, 22050) as rec:
        for i in range(90):  # 3 s, session clock starting at 42 s
            if i == 10:
                rec.push_audio(speech.pcm, 42_000 + 500)
            rec.push_frame(_frame(i), 42_000 + i * 1000 / FPS)
    video, audio, _, rate = _decode(path)
    assert len(video) == 90 and rate == 22050
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        assert abs(float(c.duration) / 1e6 - max(3.0, 0.5 + speech.duration_ms / 1000)) < 0.2
    assert np.sqrt(np.mean(audio**2)) > 0.01  # speech, not silence
    assert np.abs(audio[: int(0.4 * rate)]).max() < 0.01  # silence before the speech started


def test_a_click_and_a_flash_pushed_at_the_same_pts_stay_together(tmp_path):
    """AAC priming (1024 samples) must shift video too, or audio plays 46 ms late."""
    path = tmp_path / "sync.mp4"
    tone = (np.sin(np.arange(2205) * 2 * np.pi * 440 / 22050) * 20000).astype(np.int16)
    with SessionRecorder(path, SIZE, SIZE, FPS, 22050) as rec:
        rec.push_audio(tone, 5000 + 1000)
        rec.push_audio(tone, 5000 + 2000)
        for i in range(75):
            rec.push_frame(_frame(i, bright=i in (30, 60)), 5000 + i * 1000 / FPS)
    with av.open(str(path)) as c:
        flashes = [float(f.time) for f in c.decode(video=0) if f.to_ndarray(format="rgb24").mean() > 128]
    with av.open(str(path)) as c:
        times, samples = [], []
        for f in c.decode(audio=0):
            x = f.to_ndarray().reshape(-1)
            times.append(float(f.time) + np.arange(len(x)) / f.sample_rate)
            samples.append(x)
    t, x = np.concatenate(times), np.concatenate(samples)
    loud = t[np.abs(x) > 0.1]
    clicks = [float(loud[0]), float(loud[loud > loud[0] + 0.5][0])]
    assert len(flashes) == 2
    for flash, click in zip(flashes, clicks, strict=True):
        assert abs(flash - click) < 0.003


def test_audio_pushed_from_another_thread_lands_in_place(tmp_path):
    path = tmp_path / "threads.mp4"
    tone = (np.sin(np.arange(22050) * 2 * np.pi * 300 / 22050) * 12000).astype(np.int16)
    rec = SessionRecorder(path, SIZE, SIZE, FPS, 22050)
    rec.start()

    def speak() -> None:  # four quarter-second packets, as the TTS thread sends them
        for k in range(4):
            rec.push_audio(tone[k * 5512 : (k + 1) * 5512], 1000 + k * 250)

    worker = threading.Thread(target=speak)
    worker.start()
    for i in range(60):
        rec.push_frame(_frame(i), i * 1000 / FPS)
    worker.join(timeout=10)
    rec.stop()
    _, audio, start, rate = _decode(path)
    first = np.nonzero(np.abs(audio) > 0.05)[0][0] / rate + start
    assert abs(first - (1.0 + 1024 / 22050)) < 0.01  # at 1 s (+ the AAC priming shift)


def test_misuse_raises_named_errors(tmp_path):
    rec = SessionRecorder(tmp_path / "x.mp4", SIZE, SIZE, FPS)
    with pytest.raises(RecordingError, match="start"):
        rec.push_frame(_frame(0), 0)
    with pytest.raises(RecordingError, match="even"):
        SessionRecorder(tmp_path / "y.mp4", 95, 96, FPS)
    rec.start()
    with pytest.raises(RecordingError, match=r"\(96, 96, 3\)"):
        rec.push_frame(np.zeros((10, 10, 3), np.uint8), 0)
    rec.push_frame(_frame(0), 100)
    with pytest.raises(RecordingError, match="not after"):
        rec.push_frame(_frame(1), 100)
    rec.stop()


_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from comfyui_persona.video.recording import SessionRecorder
    from comfyui_persona.video.voice import VoiceSpec, get_synthesizer
    path, total, fps = sys.argv[1], int(sys.argv[2]), 30
    speech = get_synthesizer().synthesize("This session will be cut off abruptly. " * 3, VoiceSpec())
    rec = SessionRecorder(path, 128, 128, fps, 22050)
    rec.start()
    rec.push_audio(speech.pcm, 200)
    for i in range(total):
        img = np.zeros((128, 128, 3), np.uint8); img[:, :, 0] = i % 256
        rec.push_frame(img, i * 1000 / fps)
        time.sleep(0.002)
    print("pushed", total, flush=True)
    time.sleep(60)  # still "recording" when killed
    """
)


def test_recording_survives_sigkill_losing_at_most_about_a_second(tmp_path):
    path = tmp_path / "killed.mp4"
    pushed = 150  # 5 s at 30 fps
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), str(pushed)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            line = child.stdout.readline()
            assert line.strip() == f"pushed {pushed}"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == -signal.SIGKILL
    with av.open(str(path)) as c:
        reds = [int(f.to_ndarray(format="rgb24")[64, 64, 0]) for f in c.decode(video=0)]
    # Decodes from the start, in order, up to within a second (+ one frame) of the end.
    assert len(reds) >= pushed - FPS - 1
    assert all(abs(r - i % 256) <= 6 for i, r in enumerate(reds))
    _, audio, _, _ = _decode(path)
    assert len(audio) / 22050 >= (pushed - FPS - 1) / FPS - 0.6  # audio kept up (lag 0.5 s)
    assert np.sqrt(np.mean(audio**2)) > 0.01
