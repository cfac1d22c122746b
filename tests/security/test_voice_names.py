"""A card's voice can no longer crash the server or make libespeak-ng read a file.

Before: the espeak variant was taken as a file name, so `en-us+../../..` made libespeak-ng
parse an arbitrary server file as a voice, and a variant of 37 characters or more aborted the
process (`buffer overflow detected`, SIGABRT), on every chat, after every restart. Now voices
are names from the engine's own lists, checked before any native call; anything else speaks
with the default voice and a warning.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import aiohttp
import pytest
import websockets

from comfyui_persona.headless.server.protocol import MEDIA_AUDIO, parse_media_frame
from comfyui_persona.video.voice import UnknownVoiceError, VoiceSpec, checked_voice, get_synthesizer
from server_harness import hello, serve_process, wait_for_type

HOSTILE = [
    "en-us+../../../../../../etc/passwd",
    "en-us+" + "a" * 40,  # over the fixed buffer that aborted libespeak-ng
    "en-us+" + "b" * 36,
    "/etc/passwd",
    "../../lang/roa/es",
    "en-us+m3\x00x",
    "en-us\n+m3",
]


@pytest.mark.parametrize("voice", HOSTILE)
def test_hostile_voice_names_are_refused_by_name(voice):
    with pytest.raises(UnknownVoiceError):
        get_synthesizer("espeak").check_voice(voice)
    spec, problem = checked_voice({"engine": "espeak", "voice": voice})
    assert (spec.engine, spec.voice) == ("espeak", "en-us") and "default voice" in problem


def test_a_voice_spec_is_never_a_path():
    for name in ("../x", "a/b", "/etc/passwd", "x" * 80, ""):
        with pytest.raises(UnknownVoiceError):
            VoiceSpec(voice=name)


def test_piper_never_takes_a_path_from_a_card(tmp_path):
    fake = tmp_path / "voice.onnx"
    fake.write_bytes(b"not a model")
    (tmp_path / "voice.onnx.json").write_text("{}")
    spec, problem = checked_voice({"engine": "piper", "voice": str(fake)})
    assert (spec.engine, spec.voice) == ("espeak", "en-us") and "voice" in problem


def test_known_voices_and_variants_still_work():
    for name in ("en-us", "en-gb", "es", "de", "fr", "en-us+m3", "en-us+f2"):
        spec, problem = checked_voice({"engine": "espeak", "voice": name, "rate": 1.2})
        assert problem is None and spec.voice == name and spec.rate == 1.2
    spec, problem = checked_voice({"engine": "espeak", "voice": HOSTILE[0], "rate": 1.2, "pitch": 0.8})
    assert (spec.voice, spec.rate, spec.pitch) == ("en-us", 1.2, 0.8) and "default voice" in problem


def test_speaking_with_each_hostile_card_voice_leaves_the_process_alive():
    """In a child process, so a regression shows as a failed test, not a dead test run."""
    code = textwrap.dedent(
        f"""
        from comfyui_persona.video.voice import checked_voice, get_synthesizer
        for name in {HOSTILE!r}:
            spec, problem = checked_voice({{"engine": "espeak", "voice": name}})
            assert problem, name
            assert get_synthesizer(spec.engine).synthesize("Hello there.", spec).pcm.size > 0
        print("alive")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "alive", done.stderr[-2000:]


async def test_a_card_with_a_hostile_voice_uploaded_to_the_server_speaks_with_the_default(tmp_path):
    """The attack as it happened: a card named `mira` with the crashing variant, uploaded,
    then chatted with, in the real CLI server (a child process)."""
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Evil", "description": "x", "first_mes": "Hi.",
        "extensions": {"comfyui_persona": {"id": "evil", "voice": {"engine": "espeak", "voice": HOSTILE[1]}}},
    }}
    async with serve_process("--personas-dir", str(tmp_path / "personas"), "--recordings", str(tmp_path / "rec")) as server:
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("card", json.dumps(card).encode(), filename="evil.json", content_type="application/json")
            async with http.post(f"{server.http_url}/persona/personas", data=form) as response:
                assert response.status == 201, await response.text()
                imported = await response.json()
                persona_id = imported["id"]
                assert any("not a voice name" in w for w in imported["warnings"]), imported
        async with websockets.connect(server.ws_url, max_size=None, open_timeout=30) as ws:
            ready = await hello(ws, persona=persona_id)
            assert ready["type"] == "ready", ready
            await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
                "action": "wave", "expression": "smile", "intensity": 0.5, "dialogue": "Hello, I am still here."}}))
            await wait_for_type(ws, "reply", timeout=30)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            heard = False
            while not heard and loop.time() < deadline:
                data = await asyncio.wait_for(ws.recv(), 30)
                heard = isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_AUDIO
            assert heard, "no speech in the default voice"
        assert server.process.returncode is None, "the server died"
