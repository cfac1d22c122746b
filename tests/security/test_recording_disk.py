"""A full disk during a recording stops the recording, never the stream, and loses nothing
already written; the recording's URL is known from the start; old recordings are pruned.

The full disk is a real one: a 4 MiB tmpfs mounted over the recordings folder (as root, as
CI runs), filled by another file up to its last `ROOM` bytes. Without root, a stand-in with
the same failure: the server's RLIMIT_FSIZE of `ROOM`, so a write past it fails with EFBIG
(SIGXFSZ ignored), which the recorder meets exactly where a full disk's ENOSPC would be (the
muxer's write).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time

import aiohttp
import numpy as np
import pytest
import websockets

from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame
from comfyui_persona.headless.server.recording import RecordingResult, RecordingsFolder, new_token
from comfyui_persona.video.recording import SessionRecorder, repair_fragments
from server_harness import hello, serve_process, wait_for_type

DISK_BYTES = 4 * 2**20
ROOM = 128 * 1024  # what is left for the recording: a few one-second fragments of it


@contextlib.contextmanager
def small_disk(folder):
    """(mounted?, preexec_fn): a tmpfs over `folder` as root, else an RLIMIT_FSIZE stand-in."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and not os.environ.get("PERSONA_TEST_NO_TMPFS"):  # (set: try the stand-in)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(folder)],
                              capture_output=True, timeout=30)
        if done.returncode == 0:
            try:
                (folder / "filler").write_bytes(b"\0" * (DISK_BYTES - ROOM))
                yield True, None
            finally:
                subprocess.run(["umount", "-l", str(folder)], timeout=30)
            return

    def limit_file_size():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (ROOM, ROOM))

    yield False, limit_file_size


async def test_a_full_disk_stops_the_recording_and_the_stream_goes_on(tmp_path):
    import av

    recordings = tmp_path / "recordings"
    with small_disk(recordings) as (mounted, preexec):
        async with serve_process("--personas-dir", str(tmp_path / "p"), "--recordings", str(recordings),
                                 "--recordings-min-free-mb", "0", "--jpeg-quality", "95",
                                 preexec_fn=preexec) as server:
            async with websockets.connect(server.ws_url, max_size=None, open_timeout=30) as ws:
                await hello(ws)
                await ws.send(json.dumps({"type": "record", "id": "r1", "on": True}))
                started = await wait_for_type(ws, "recording", reply_to="r1", timeout=30)
                url = started["url"]  # known before anything can go wrong
                stopped = None
                for n in range(60):  # keep the picture changing: bigger H.264 frames fill the disk
                    await ws.send(json.dumps({"type": "action", "id": f"a{n}", "directive": {
                        "action": ["wave", "dance", "jump", "spin"][n % 4], "expression": "smile", "intensity": 1.0}}))
                    with contextlib.suppress(asyncio.TimeoutError):
                        stopped = await wait_for_type(ws, "recording", reply_to=None, timeout=1.0)
                    if stopped is not None:
                        break
                assert stopped is not None, "the recording never filled the disk"
                assert stopped["on"] is False and stopped["url"] == url and "written" in stopped["reason"]
                assert str(recordings) not in stopped["reason"], "the server's path reached the client"
                loop = asyncio.get_running_loop()
                frames, start = 0, loop.time()
                while frames < 48:  # the stream goes on: two seconds of frames after the failure
                    data = await asyncio.wait_for(ws.recv(), 10)
                    frames += isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_JPEG
                assert loop.time() - start < 10
                async with aiohttp.ClientSession() as http, http.get(server.http_url + url) as response:
                    assert response.status == 200
                    body = await response.read()
            assert server.process.returncode is None
        path = tmp_path / "partial.mp4"
        path.write_bytes(body)
        with av.open(str(path)) as container:
            decoded = [frame.pts for frame in container.decode(video=0)]  # no corrupt tail: every frame decodes
        assert decoded == sorted(decoded) and len(decoded) == stopped["frames"] > 0
        print(f"disk: {'tmpfs' if mounted else 'RLIMIT_FSIZE'}; {len(decoded)} frames kept")


async def test_a_recording_does_not_start_on_a_nearly_full_disk(tmp_path):
    recordings = tmp_path / "recordings"
    with small_disk(recordings) as (mounted, preexec):
        if not mounted:
            pytest.skip("needs a real small disk (root, for a tmpfs): free space is what is checked")
        async with serve_process("--personas-dir", str(tmp_path / "p"), "--recordings", str(recordings),
                                 "--recordings-min-free-mb", "64") as server:
            async with websockets.connect(server.ws_url, max_size=None, open_timeout=30) as ws:
                await hello(ws)
                await ws.send(json.dumps({"type": "record", "id": "r1", "on": True}))
                error = await wait_for_type(ws, "error", reply_to="r1", timeout=30)
                assert "64 MB free" in error["message"]


def _recording(folder, frames: int) -> str:
    token = new_token()
    recorder = SessionRecorder(folder / f"{token}.mp4", 64, 64, 24, 22050)
    recorder.start()
    for n in range(frames):
        recorder.push_frame(np.full((64, 64, 3), n % 255, np.uint8), n * 1000 / 24)
    recorder.stop()
    return token


def test_a_killed_recording_is_repaired_and_indexed_at_the_next_start(tmp_path):
    import av

    folder = RecordingsFolder(tmp_path)
    token = _recording(tmp_path, 72)
    folder.started(token, "session-a")
    path = tmp_path / f"{token}.mp4"
    whole = path.stat().st_size
    with path.open("r+b") as handle:  # what a crash mid-fragment leaves: a cut-off tail
        handle.truncate(whole - 3000)
    restarted = RecordingsFolder(tmp_path)
    assert restarted.recover(active=set()) == 1
    (entry,) = restarted.of_session("session-a")
    assert entry.state == "finished" and entry.frames > 0 and "stopped" in entry.problem
    with av.open(str(path)) as container:
        assert len(list(container.decode(video=0))) == entry.frames
    assert repair_fragments(path) == path.stat().st_size  # nothing more to cut


def test_retention_deletes_old_then_oldest_beyond_the_total_and_never_the_active(tmp_path):
    folder = RecordingsFolder(tmp_path, max_days=30, max_mb=0)
    old, new, active = (_recording(tmp_path, 24) for _ in range(3))
    ancient = time.time() - 40 * 86400
    for token in (old, active):
        os.utime(tmp_path / f"{token}.mp4", (ancient, ancient))
    (tmp_path / "notes.mp4").write_bytes(b"someone else's file")
    assert folder.prune(active={active}) == [old]
    assert {p.name for p in tmp_path.glob("*.mp4")} == {f"{new}.mp4", f"{active}.mp4", "notes.mp4"}
    sized = RecordingsFolder(tmp_path, max_days=0, max_mb=0)
    assert sized.prune(active=set()) == []
    size = (tmp_path / f"{new}.mp4").stat().st_size
    tight = RecordingsFolder(tmp_path, max_days=0, max_mb=1)
    tight.max_mb = (size + 1) / 2**20  # room for one file: the older one goes
    assert tight.prune(active=set()) == [active]


def test_the_index_is_written_atomically(tmp_path):
    folder = RecordingsFolder(tmp_path)
    token = new_token()
    folder.started(token, "s")
    folder.finished(RecordingResult(token, tmp_path / f"{token}.mp4", 10, 400))
    data = json.loads((tmp_path / "index.json").read_text())
    assert data["recordings"][token]["state"] == "finished"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
