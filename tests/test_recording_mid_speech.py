"""`record` started and stopped while the persona speaks: the file holds exactly the audio
that sounds during its frames.

Audio is released to the viewer up to `AUDIO_AHEAD_MS` ahead of the video clock, so when
`record` comes mid-sentence, the speech sounding during the first recorded frames has
already been sent, and at `record` off, speech sounding after the last recorded frame has
too. The file must start with that earlier speech and end with the last frame.

Real server on port 0, real espeak, real preview renderer, real PyAV decode of the MP4.
Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import numpy as np
import websockets

from comfyui_persona.headless.server.protocol import MEDIA_AUDIO, parse_media_frame
from server_harness import TIMEOUT, hello, running, service_fixtures

#: About 30 s of espeak, sentences back to back: it is still speaking when the test ends.
LONG = " ".join(
    f"Sentence number {w} is here to keep the persona busy for quite a while longer."
    for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")
)
#: One AAC frame (samples): the encoder's granularity at either end of the track.
AAC_FRAME = 1024
#: How long the recording lasts, on the session clock.
RECORD_MS = 2000
#: Leading audio that must be speech (an espeak word gap is far shorter).
HEAD_S = 0.2


service, _warm = service_fixtures(recordings=True, resume_grace_s=5.0)


class Viewer:
    """Reads everything the server sends in the background (so the stream keeps flowing)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.audio_packets = 0
        self.messages: list[dict] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                if isinstance(data, bytes):
                    self.audio_packets += parse_media_frame(data)[0] == MEDIA_AUDIO
                else:
                    self.messages.append(json.loads(data))

    def message(self, kind: str, reply_to: str) -> dict | None:
        return next((m for m in self.messages if m["type"] == kind and m.get("reply_to") == reply_to), None)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def until(predicate, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def mid_sentence(speech, left_ms: int) -> bool:
    """The next frame falls inside a sentence begun at least 300 ms ago with `left_ms` to go."""
    now = speech.next_frame_ms()
    return any(s.start_ms + 300 <= now <= s.end_ms - left_ms for s in speech.scheduled())


def decode(path) -> dict:
    """Times (s) of the file's first and last video frame, its fps, and its audio track."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(f.time) for f in container.decode(video=0)]
        fps = float(stream.average_rate)
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
        frames = list(container.decode(audio=0))
        audio_start = float(frames[0].time)
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    return {"video_start": times[0], "video_end": times[-1] + 1.0 / fps, "frames": len(times), "rate": rate,
            "audio_start": audio_start, "audio_end": audio_start + samples.size / rate, "samples": samples}


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


async def test_a_recording_made_mid_speech_holds_exactly_the_audio_of_its_frames(service, tmp_path):
    async with running(service) as server, websockets.connect(
        server.ws_url, open_timeout=TIMEOUT, close_timeout=5, max_size=None
    ) as ws, aiohttp.ClientSession() as http:
        await hello(ws, persona="mira")
        viewer = Viewer(ws)
        try:
            await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
                "action": "idle", "expression": "smile", "intensity": 0.6, "dialogue": LONG}}))
            await until(lambda: service.sessions, TIMEOUT, "the session")
            speech = next(iter(service.sessions.values())).speech
            # Audio has flowed for a while and the next frame is well inside a sentence: the
            # speech of the first recorded frames was released before `record` arrives.
            await until(lambda: viewer.audio_packets >= 10 and mid_sentence(speech, 1500), 60, "speech under way")
            await ws.send(json.dumps({"type": "record", "id": "r1", "on": True}))
            await until(lambda: viewer.message("recording", "r1"), 30, "recording on")
            began_ms = speech.next_frame_ms()
            # Stop while the reply goes on for seconds: audio past the last frame was released.
            await until(
                lambda: speech.next_frame_ms() >= began_ms + RECORD_MS
                and speech.scheduled() and speech.scheduled()[-1].end_ms > speech.next_frame_ms() + 2000,
                60, "two seconds recorded mid-speech",
            )
            await ws.send(json.dumps({"type": "record", "id": "r2", "on": False}))
            await until(lambda: viewer.message("recording", "r2"), 30, "recording off")
            stopped = viewer.message("recording", "r2")
            assert speech.speaking(), "the reply ended before the recording did: not the case tested"
            async with http.get(server.http_url + stopped["url"]) as response:
                assert response.status == 200
                data = await response.read()
        finally:
            await viewer.close()
    path = tmp_path / "mid_speech.mp4"
    path.write_bytes(data)
    got = decode(path)
    rate = got["rate"]
    frame_s = AAC_FRAME / rate
    start_gap = got["audio_start"] - got["video_start"]
    overrun = got["audio_end"] - got["video_end"]
    head = got["samples"][: int(HEAD_S * rate)]
    loud = np.flatnonzero(np.abs(got["samples"]) > 0.02)
    onset_ms = 1000.0 * loud[0] / rate if loud.size else float("inf")
    print(f"rate={rate} frames={got['frames']} audio_start-video_start={start_gap * 1000:.1f} ms "
          f"first_speech_at={onset_ms:.1f} ms audio_end-video_end={overrun * 1000:.1f} ms "
          f"head_rms={rms(head):.4f} total_rms={rms(got['samples']):.4f}")
    assert got["frames"] == stopped["frames"]
    # (a) the audio starts with the video, and with the speech already sounding then
    assert abs(start_gap) <= frame_s, f"audio starts {start_gap * 1000:.1f} ms after the video"
    assert rms(head) > 0.02, f"the first {HEAD_S} s are silent (rms {rms(head):.4f}): the speech released before `record` is missing"
    # (b) nothing sounds past the last frame (the encoder may round up to one AAC frame)
    assert overrun <= frame_s, f"audio runs {overrun * 1000:.1f} ms past the last frame"


def _packets(start_ms: int, count: int, value: int = 1000) -> list:
    """`count` 100 ms packets from `start_ms`, as `SpeechQueue` cuts them (real packetize)."""
    from comfyui_persona.video.voice import STREAM_RATE, packetize

    pcm = np.full(count * STREAM_RATE // 10, value, np.int16)
    return packetize(pcm, STREAM_RATE, start_ms)


def test_recent_audio_stays_bounded_and_forgets_what_has_sounded():
    from comfyui_persona.headless.server.recording import RecentAudio
    from comfyui_persona.headless.server.speech import AUDIO_AHEAD_MS

    recent = RecentAudio(AUDIO_AHEAD_MS + 1500)
    for k in range(200):  # 20 s released, no chunk ever taking any: the backstop holds
        recent.add(_packets(100 * k, 1))
    assert len(recent) <= (AUDIO_AHEAD_MS + 1500) // 100 + 1
    held = recent.through(19_550.0)  # a chunk ending mid-packet: that packet stays
    assert held[-1].pts_ms == 19_900
    assert [p.pts_ms for p in recent.through(20_000.0)] == [19_500, 19_600, 19_700, 19_800, 19_900]
    assert len(recent) == 0
    recent.add(_packets(5_000, 3))
    recent.add(_packets(0, 2))  # the renderer restarted its clock: the old packets are stale
    assert [p.pts_ms for p in recent.through(0.0)] == [0, 100]


def test_sounding_cuts_a_straddling_packet_at_the_sample():
    from comfyui_persona.headless.server.recording import packets_sounding as sounding
    from comfyui_persona.video.voice import STREAM_RATE

    packets = _packets(1000, 3, value=7)  # 1000..1300 ms
    # The window 1050..1250 ms (origin 1000): 50 ms of the first packet, all of the second,
    # 50 ms of the third; before the speech and after it, silence.
    rate = STREAM_RATE
    out = sounding(packets, 1000.0, int(0.05 * rate), int(0.25 * rate), rate)
    assert out.size == int(0.25 * rate) - int(0.05 * rate) and (out == 7).all()
    out = sounding(packets, 1000.0, int(0.25 * rate), int(0.40 * rate), rate)
    speech = int(0.30 * rate) - int(0.25 * rate)
    assert (out[:speech] == 7).all() and (out[speech:] == 0).all()
