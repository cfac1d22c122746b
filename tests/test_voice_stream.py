"""Spoken replies on the wire: PROTOCOL kind-2 audio on the video clock, `speaking` state,
`reset` stops speech, and `record` → a downloadable MP4 with the speech in it.

Audio is released as it falls due (at most ~0.5 s ahead of the render clock), so tests
wait for the audio they expect with a deadline instead of collecting for a fixed time.
Real server on port 0, real espeak, real preview renderer, real PyAV decode.
"""

import asyncio
import json

import aiohttp
import numpy as np
import websockets

from comfyui_persona.headless.server.protocol import MEDIA_AUDIO, MEDIA_JPEG, parse_media_frame
from comfyui_persona.video.voice import get_synthesizer, stream_utterances
from server_harness import TIMEOUT, hello, running, service_fixtures, settle, wait_for_type

SPEECH = "Hello there! It is lovely to see you today. Shall we talk for a while?"


service, _warm = service_fixtures(recordings=True, resume_grace_s=5.0)


def connect(server):
    return websockets.connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=5, max_size=None)


async def collect(ws, seconds: float, until=None):
    """(audio packets, video frames, JSON messages) received within `seconds`, or until
    `until(audio, video, messages)` holds (checked after each one)."""
    audio, video, messages = [], [], []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(ws.recv(), remaining)
        except asyncio.TimeoutError:
            break
        if isinstance(data, bytes):
            kind, index, pts, payload = parse_media_frame(data)
            (audio if kind == MEDIA_AUDIO else video).append((index, pts, payload, loop.time()))
            assert kind in (MEDIA_AUDIO, MEDIA_JPEG)
        else:
            messages.append(json.loads(data))
        if until is not None and until(audio, video, messages):
            break
    return audio, video, messages


def seconds_of(audio) -> float:
    return sum(len(p) // 2 for _, _, p, _ in audio) / 22050


def spoken_seconds(session, text: str) -> float:
    """How long `text` lasts in the session's voice (synthesised here, sentence by sentence)."""
    voice = session.speech.voice
    return sum(u.duration_ms for u in stream_utterances(get_synthesizer(voice.engine), text, voice)) / 1000


async def test_reply_is_spoken_as_pcm_on_the_video_clock_while_speaking_is_true(service):
    async with running(service) as server, connect(server) as ws:
        ready = await hello(ws, persona="mira")
        assert ready["audio_rate"] == 22050
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
            "action": "idle", "expression": "smile", "intensity": 0.7, "dialogue": SPEECH}}))
        expected = spoken_seconds(next(iter(service.sessions.values())), SPEECH)
        audio, video, messages = await collect(ws, 30.0, until=lambda a, v, m: seconds_of(a) >= expected - 0.05)
        assert len(audio) >= 20, f"{len(audio)} audio packets"
        pcm = np.frombuffer(b"".join(p for _, _, p, _ in audio), dtype="<i2")
        seconds = len(pcm) / 22050
        assert 2.0 < seconds < 12.0
        rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
        assert rms > 300, rms  # speech, not silence
        # pts continue sample-exactly within a sentence and never overlap across sentences
        for (_, pts_a, pay_a, _), (_, pts_b, _, _) in zip(audio, audio[1:], strict=False):
            assert pts_b >= pts_a + len(pay_a) // 2 * 1000 // 22050 - 1
        # the first packet is due shortly after the video frames around it (same clock)
        first_audio = audio[0]
        shown = [pts for _, pts, _, t in video if t <= first_audio[3]]
        assert shown, "no video before the first audio packet"
        assert 0 <= first_audio[1] - shown[-1] <= 1000, (first_audio[1], shown[-1])
        # the text is spoken sentence by sentence: the first audio arrives long before the
        # whole reply could have been played
        speaking = [m["state"]["speaking"] for m in messages if m["type"] == "state"]
        assert True in speaking, speaking
        indices = [i for i, _, _, _ in audio]
        assert indices == sorted(indices) and len(set(indices)) == len(indices)


async def test_a_reply_in_another_language_is_said_with_that_language_s_voice(service):
    """Mira's voice is espeak en-us: it read "どういたしまして！" as "Japanese letter, Japanese
    letter..." (6.1 s of audio, the mouth moving to it); espeak-ng's Japanese voice says it in
    1.4 s. The length of what the viewer gets shows which voice spoke."""
    reply = "どういたしまして！"
    async with running(service) as server, connect(server) as ws:
        await hello(ws, persona="mira")
        await ws.send(json.dumps({"type": "action", "id": "ja", "directive": {
            "action": "idle", "expression": "smile", "intensity": 0.5, "dialogue": reply}}))

        def said(audio, video, messages) -> bool:
            states = [m["state"]["speaking"] for m in messages if m["type"] == "state"]
            return True in states and states[-1] is False

        audio, _video, _messages = await collect(ws, 30.0, until=said)
        assert 0.5 < seconds_of(audio) < 3.0, seconds_of(audio)


async def test_reset_stops_speaking_at_once(service):
    long_text = " ".join(["This is a rather long sentence that keeps the persona talking."] * 6)
    async with running(service) as server, connect(server) as ws:
        await hello(ws, persona="mira")
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
            "action": "idle", "expression": "neutral", "intensity": 0.5, "dialogue": long_text}}))
        loop = asyncio.get_running_loop()
        began = loop.time()
        while True:
            message = await wait_for_type(ws, "state", timeout=TIMEOUT)
            if message["state"]["speaking"]:
                break
        await ws.send(json.dumps({"type": "reset", "id": "r1"}))
        while True:
            message = await wait_for_type(ws, "state", timeout=TIMEOUT)
            if not message["state"]["speaking"]:
                break
        # The reply is ~20 s of speech; reset ended it within a couple of seconds.
        assert loop.time() - began < 6.0
        session = next(iter(service.sessions.values()))
        # The cut is at the end of the chunk being rendered when the reset came (its mouth
        # timeline was fixed): by the next chunk nothing speaks, and nothing more is queued.
        await settle(lambda: not session.speech.speaking(), timeout=2.0)
        assert all(s.end_ms <= session.speech.next_frame_ms() for s in session.speech.scheduled())


async def test_record_start_stop_downloads_a_playable_mp4_with_speech(service, tmp_path):
    import av

    async with running(service) as server, connect(server) as ws, aiohttp.ClientSession() as http:
        await hello(ws, persona="mira")
        await ws.send(json.dumps({"type": "record", "id": "x0", "on": False}))
        error = await wait_for_type(ws, "error", reply_to="x0")
        assert error["code"] == "invalid" and "not recording" in error["message"]
        await ws.send(json.dumps({"type": "record", "id": "x1", "on": True}))
        started = await wait_for_type(ws, "recording", reply_to="x1")
        assert started["on"] is True and started["url"].startswith("/persona/recordings/")
        await ws.send(json.dumps({"type": "record", "id": "x2", "on": True}))
        error = await wait_for_type(ws, "error", reply_to="x2")
        assert error["code"] == "invalid" and "already recording" in error["message"]
        await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
            "action": "wave", "expression": "smile", "intensity": 0.7, "dialogue": "Hello! Nice to meet you."}}))
        await collect(ws, 3.5)
        await ws.send(json.dumps({"type": "record", "id": "x3", "on": False}))
        stopped = await wait_for_type(ws, "recording", reply_to="x3", timeout=20)
        assert stopped["on"] is False and stopped["url"].startswith("/persona/recordings/")
        assert stopped["frames"] > 24 and stopped["duration_ms"] > 2000
        async with http.get(server.http_url + stopped["url"]) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "video/mp4"
            data = await response.read()
        other = stopped["url"].replace(stopped["url"][-12:-4], "AAAAAAAA")
        async with http.get(server.http_url + other) as response:
            assert response.status == 404
        async with http.get(server.http_url + "/persona/recordings/..%2F..%2Fetc%2Fpasswd.mp4") as response:
            assert response.status == 404
    path = tmp_path / "download.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        audio_seconds = samples.size / container.streams.audio[0].rate
    assert frames == stopped["frames"]
    assert abs(frames / 24.0 - stopped["duration_ms"] / 1000) < 0.5
    assert abs(audio_seconds - stopped["duration_ms"] / 1000) < 0.6
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 0.005


async def test_a_streamed_reply_is_spoken_from_its_first_sentence_and_nothing_twice(service):
    """Partial `reply` events (cumulative text, as an LLM streams) hand finished sentences
    to speech at once; the final event adds only the rest."""
    async with running(service) as server, connect(server) as ws:
        await hello(ws, persona="mira")
        session = next(iter(service.sessions.values()))
        listener = service.store.find(session.id).listener
        # The interpreter node tells the session's listener, from a worker thread; do the same.
        await asyncio.to_thread(listener.on_reply, 7, "Hello there. How", False)
        early, _, _ = await collect(ws, TIMEOUT, until=lambda a, v, m: a)
        assert early, "no audio before the reply finished"
        await asyncio.to_thread(listener.on_reply, 7, "Hello there. How are you today?", True)
        # "Hello there." then "How are you today?": about 1 s each with espeak. Once the queue
        # has played out every packet was released, so a sentence spoken twice would be here.
        expected = spoken_seconds(session, "Hello there.") + spoken_seconds(session, "How are you today?")
        late, _, _ = await collect(
            ws, 30.0, until=lambda a, v, m: not session.speech.speaking() and seconds_of(early + a) >= 0.75 * expected
        )
        total_s = seconds_of(early + late)
        assert abs(total_s - expected) < 0.25 * expected, (total_s, expected)
        assert session.speech_lane.pending_sentences() == {}
