"""The `PersonaSessionRecorder` node: the preview workflow's nodes run with a recorder, the
session speaks through the real speech part the headless server uses (espeak), and the MP4
must hold every frame (H.264) and the voice (AAC) where it was spoken; a recording killed
mid-session must still decode.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

from paths import REPO

WORKFLOW = REPO / "workflows" / "api" / "persona_preview_chat_api.json"
SESSION = "rec-node"


def _workflow() -> dict:
    workflow = json.loads(WORKFLOW.read_text())
    workflow["6"]["inputs"].update(width=128, height=128)
    workflow["30"] = {"class_type": "PersonaSessionRecorder",
                      "inputs": {"frames": ["6", 0], "filename_prefix": "runs/talk"}}
    return workflow


def _decode(path: Path) -> tuple[int, np.ndarray, dict]:
    """(video frames, audio samples as float in [-1, 1], stream facts)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        facts = {"video_codec": video.codec_context.name, "audio_codec": audio.codec_context.name,
                 "audio_rate": audio.codec_context.sample_rate}
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        pcm = [f.to_ndarray().astype(np.float32).reshape(-1) for f in container.decode(audio=0)]
    return frames, (np.concatenate(pcm) if pcm else np.zeros(0, np.float32)), facts


def test_recorder_node_writes_frames_and_the_spoken_reply(tmp_path: Path, monkeypatch) -> None:
    from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph
    from comfyui_persona.headless.server.speech import SessionSpeech
    from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
    from comfyui_persona.nodes.runtime import SessionStore
    from comfyui_persona.video.voice import STREAM_RATE, VoiceSpec

    monkeypatch.setenv("PERSONA_RECORDINGS_DIR", str(tmp_path))
    store = SessionStore()
    runner = StreamingRunner(WorkflowGraph(_workflow(), NODE_CLASS_MAPPINGS), store, SESSION)
    speech = SessionSpeech(VoiceSpec())
    store.open(SESSION, speech=speech, streamed=True)
    spoken: list = []
    try:
        result = runner.start()
        for _ in range(5):  # ~0.4 s of silence before the persona speaks
            result = runner.tick()
        quiet_frames = result.ui["30"]["persona_recording"][0]["frames_rendered"]
        sentences = speech.speak("Hello there. Nice to meet you!", lambda item, packets: spoken.append(item))
        assert sentences == 2 and len(spoken) == 2
        speech_end_ms = spoken[-1].end_ms
        while True:  # render until the voice is over, plus a little
            result = runner.tick()
            summary = result.ui["30"]["persona_recording"][0]
            if summary["frames_rendered"] * 1000 / 24 > speech_end_ms + 300:
                break
        frames = summary["frames_rendered"]
    finally:
        runner.close()  # closes the session: the recorder finishes its file

    path = tmp_path / "runs" / f"talk_{SESSION}.mp4"
    decoded, pcm, facts = _decode(path)
    assert facts == {"video_codec": "h264", "audio_codec": "aac", "audio_rate": STREAM_RATE}
    assert decoded == frames, "every rendered frame is in the file"
    # The voice is where the session clock put it: silence before, speech at each sentence.
    rate = STREAM_RATE
    first_ms = spoken[0].start_ms
    assert first_ms >= quiet_frames * 1000 / 24
    before = pcm[: int(rate * (first_ms - 60) / 1000)]
    assert np.sqrt(np.mean(before**2)) < 1e-3, "silence before the persona speaks"
    for item in spoken:
        start = int(rate * item.start_ms / 1000)
        heard = pcm[start : start + len(item.utterance.pcm)]
        source = item.utterance.pcm.astype(np.float32) / 32768
        assert np.sqrt(np.mean(heard**2)) > 0.3 * np.sqrt(np.mean(source**2)) > 0.005, item.utterance.text
    # The audio track covers the video (AAC pads, so a little longer is fine).
    assert abs(len(pcm) / rate - frames / 24) < 0.25


OLD_REPLY = (
    "This first sentence is long enough that it can be cut off well before it ends. "
    "Then a second one follows it. And a third one, which nobody should hear."
)


def _talk_then_cut(tmp_path: Path, monkeypatch, finish_sent: bool, new_reply: str | None):
    """Record a session that starts `OLD_REPLY`, is cut ~0.6 s into its first sentence
    (`SessionSpeech.stop`, as `reset` or a barging-in reply does), optionally speaks
    `new_reply` from the cut, and renders on past where the old reply would have ended.
    Returns (old sentences, new sentences, cut pts, decoded (times ms, samples))."""
    from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph
    from comfyui_persona.headless.server.speech import SessionSpeech
    from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
    from comfyui_persona.nodes.runtime import SessionStore
    from comfyui_persona.video.voice import VoiceSpec

    monkeypatch.setenv("PERSONA_RECORDINGS_DIR", str(tmp_path))
    store = SessionStore()
    runner = StreamingRunner(WorkflowGraph(_workflow(), NODE_CLASS_MAPPINGS), store, SESSION)
    speech = SessionSpeech(VoiceSpec())
    store.open(SESSION, speech=speech, streamed=True)
    old: list = []
    new: list = []
    try:
        runner.start()
        assert speech.speak(OLD_REPLY, lambda item, packets: old.append(item)) == 3
        assert old[0].end_ms - old[0].start_ms > 2000
        while speech.next_frame_ms() < old[0].start_ms + 600:
            runner.tick()
        at = speech.stop(finish_sent=finish_sent)
        assert old[0].start_ms < at < old[0].end_ms, "the cut falls inside the first sentence"
        if new_reply:
            speech.speak(new_reply, lambda item, packets: new.append(item))
            assert new[0].start_ms == at  # the new reply takes over at the cut, gapless
        end = max([old[-1].end_ms] + [item.end_ms for item in new]) + 300
        while speech.next_frame_ms() < end:
            runner.tick()
    finally:
        runner.close()
    return old, new, at, _audio_on_session_clock(tmp_path / "runs" / f"talk_{SESSION}.mp4")


def _audio_on_session_clock(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(session pts ms of each sample, samples) of the file's audio, placed by the video:
    the muxer shifts both streams by the AAC priming (46 ms), so a sample's session time is
    its file time minus the shift that frame k (pts k·1000/24 ms on the session clock) got."""
    from comfyui_persona.video.voice.av_sync import decode_audio

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [float(f.pts * f.time_base) * 1000 for f in container.decode(stream)]
    shift = float(np.median([t - round(k * 1000 / 24) for k, t in enumerate(pts) if k]))
    times, samples = decode_audio(path)
    return times - shift, samples


def _span(decoded, start_ms: float, end_ms: float) -> np.ndarray:
    times, samples = decoded
    return samples[np.searchsorted(times, start_ms) : np.searchsorted(times, end_ms)]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _source(item, start_ms: float, end_ms: float) -> np.ndarray:
    """`item`'s samples (float) that sound from `start_ms` to `end_ms` on the session clock."""
    rate = item.utterance.sample_rate
    lo, hi = (int(round((t - item.start_ms) * rate / 1000)) for t in (start_ms, end_ms))
    return item.utterance.pcm[max(lo, 0) : max(hi, 0)].astype(np.float64) / 32768


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def test_a_reset_mid_reply_leaves_the_file_silent_from_the_cut(tmp_path: Path, monkeypatch) -> None:
    """The file holds what the viewer hears: the first sentence up to the cut, then
    nothing of the reply's rest (before, every queued sentence was written whole as soon
    as the node saw it, so the cut-off reply played on in the file)."""
    old, _, at, decoded = _talk_then_cut(tmp_path, monkeypatch, finish_sent=False, new_reply=None)
    heard = _span(decoded, old[0].start_ms + 60, at - 60)
    assert _rms(heard) > 0.3 * _rms(_source(old[0], old[0].start_ms + 60, at - 60)) > 0.005
    assert _similarity(heard, _source(old[0], old[0].start_ms + 60, at - 60)) > 0.8  # in place
    after = _span(decoded, at + 60, old[-1].end_ms)
    assert len(after) > 22050 and _rms(after) < 1e-3, "nothing of the cut-off reply after the cut"


def test_a_reply_barging_in_replaces_the_old_one_in_the_file(tmp_path: Path, monkeypatch) -> None:
    """A new reply cuts the old one where the released audio ends and starts there; the
    file then has the new reply at its place, not the rest of the old one."""
    old, new, at, decoded = _talk_then_cut(
        tmp_path, monkeypatch, finish_sent=True, new_reply="Sorry, let me answer that differently."
    )
    assert at < old[0].end_ms - 500, "the old sentence would still be sounding after the cut"
    window = (at + 60, min(new[0].end_ms, old[0].end_ms) - 60)
    heard = _span(decoded, *window)
    assert _similarity(heard, _source(new[0], *window)) > 0.8, "the new reply is heard from the cut"
    assert abs(_similarity(heard, _source(old[0], *window))) < 0.3, "not the old one"
    before = _span(decoded, old[0].start_ms + 60, at - 60)
    assert _similarity(before, _source(old[0], old[0].start_ms + 60, at - 60)) > 0.8
    after = _span(decoded, new[-1].end_ms + 60, old[-1].end_ms)
    assert _rms(after) < 1e-3, "the old reply's later sentences are not in the file"


def test_a_quiet_session_gets_a_silent_track_and_is_readable_while_recording(tmp_path: Path, monkeypatch) -> None:
    from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph
    from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
    from comfyui_persona.nodes.runtime import SessionStore

    monkeypatch.setenv("PERSONA_RECORDINGS_DIR", str(tmp_path))
    store = SessionStore()
    store.open(SESSION, streamed=True)
    runner = StreamingRunner(WorkflowGraph(_workflow(), NODE_CLASS_MAPPINGS), store, SESSION)
    path = tmp_path / "runs" / f"talk_{SESSION}.mp4"
    try:
        runner.start()
        for _ in range(7):
            result = runner.tick()
        summary = result.ui["30"]["persona_recording"][0]
        readable, _, _ = _decode(path)  # fragments are complete while the session goes on
        assert 0 < summary["frames"] <= readable <= summary["frames_rendered"]  # every frame reported is there
    finally:
        runner.close()
    decoded, pcm, facts = _decode(path)
    assert decoded == summary["frames_rendered"] and facts["audio_codec"] == "aac"
    assert len(pcm) and np.abs(pcm).max() < 1e-3


_KILLED = """
import json, os, sys, time
os.environ["PERSONA_RECORDINGS_DIR"] = sys.argv[1]
from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.runtime import SessionStore
store = SessionStore()
store.open(sys.argv[3], streamed=True)  # a streamed session: one file
runner = StreamingRunner(WorkflowGraph(json.loads(sys.argv[2]), NODE_CLASS_MAPPINGS), store, sys.argv[3])
runner.start()
ticks = 0
while True:
    result = runner.tick()
    ticks += 1
    if ticks == 40:  # report what was recorded, then hang until killed
        print(result.ui["30"]["persona_recording"][0]["frames"], flush=True)
        time.sleep(60)
"""


def test_a_recording_killed_mid_session_still_decodes(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(tmp_path), json.dumps(_workflow()), SESSION],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        try:
            line = process.stdout.readline()
            assert line.strip(), process.stderr.read()[-3000:]
            frames_at_kill = int(line)
            time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
    decoded, pcm, facts = _decode(tmp_path / "runs" / f"talk_{SESSION}.mp4")
    # At most the fragment in progress is lost: forced keyframes are ~0.17 s (4 frames) apart
    # here, and a fragment is complete once the next one starts (8 frames at worst).
    assert frames_at_kill - 8 <= decoded <= frames_at_kill, (decoded, frames_at_kill)
    assert facts["audio_codec"] == "aac" and len(pcm) > 0
