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

import numpy as np
import pytest

from paths import REPO

av = pytest.importorskip("av")

WORKFLOW = REPO / "workflows" / "persona_preview_chat_api.json"
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
    from comfyui_persona.nodes.session_store import SessionStore
    from comfyui_persona.video.voice import STREAM_RATE, VoiceSpec

    monkeypatch.setenv("PERSONA_RECORDINGS_DIR", str(tmp_path))
    store = SessionStore()
    runner = StreamingRunner(WorkflowGraph(_workflow(), NODE_CLASS_MAPPINGS), store, SESSION)
    session = store.get(SESSION)
    speech = SessionSpeech(VoiceSpec())
    session.replace("speech", speech)
    spoken: list = []
    try:
        result = runner.start()
        quiet_frames = result.ui["30"]["persona_recording"][0]["frames"]
        for _ in range(5):  # ~0.4 s of silence before the persona speaks
            result = runner.tick()
        quiet_frames = result.ui["30"]["persona_recording"][0]["frames"]
        sentences = speech.speak("Hello there. Nice to meet you!", lambda item, packets: spoken.append(item))
        assert sentences == 2 and len(spoken) == 2
        speech_end_ms = spoken[-1].end_ms
        while True:  # render until the voice is over, plus a little
            result = runner.tick()
            summary = result.ui["30"]["persona_recording"][0]
            if summary["frames"] * 1000 / 24 > speech_end_ms + 300:
                break
        frames = summary["frames"]
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


def test_a_quiet_session_gets_a_silent_track_and_is_readable_while_recording(tmp_path: Path, monkeypatch) -> None:
    from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph
    from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
    from comfyui_persona.nodes.session_store import SessionStore

    monkeypatch.setenv("PERSONA_RECORDINGS_DIR", str(tmp_path))
    runner = StreamingRunner(WorkflowGraph(_workflow(), NODE_CLASS_MAPPINGS), SessionStore(), SESSION)
    path = tmp_path / "runs" / f"talk_{SESSION}.mp4"
    try:
        runner.start()
        for _ in range(7):
            result = runner.tick()
        frames = result.ui["30"]["persona_recording"][0]["frames"]
        readable, _, _ = _decode(path)  # fragments are complete while the session goes on
        assert 0 < readable <= frames
    finally:
        runner.close()
    decoded, pcm, facts = _decode(path)
    assert decoded == frames and facts["audio_codec"] == "aac"
    assert len(pcm) and np.abs(pcm).max() < 1e-3


_KILLED = """
import json, os, sys, time
os.environ["PERSONA_RECORDINGS_DIR"] = sys.argv[1]
from comfyui_persona.headless.runner import StreamingRunner, WorkflowGraph
from comfyui_persona.nodes import NODE_CLASS_MAPPINGS
from comfyui_persona.nodes.session_store import SessionStore
runner = StreamingRunner(WorkflowGraph(json.loads(sys.argv[2]), NODE_CLASS_MAPPINGS), SessionStore(), sys.argv[3])
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
