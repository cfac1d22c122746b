"""`RecordingDesk`: the steps a session's `record` goes through, where they fail.

Real files (PyAV, the index on disk) in a temporary folder; the server-level paths (record
on/off, a full disk, a killed server) are in test_protocol_conformance.py,
security/test_recording_disk.py and test_recording_server_crash.py.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from comfyui_persona.headless.server.recording import RecordingDesk
from server_harness import running, service_fixtures

service, _warm = service_fixtures(speech=False)

W, H, FPS, RATE = 64, 48, 12.0, 24000


def desk_in(folder, **limits) -> RecordingDesk:
    settings = {"max_days": 0.0, "max_mb": 0, "min_free_mb": 0, "max_minutes": 60.0, **limits}
    return RecordingDesk(folder, **settings)


def recorded(desk: RecordingDesk, session: str, chunks: int = 2):
    recording = desk.open(session, W, H, FPS, RATE)
    for c in range(chunks):
        frames = np.full((12, H, W, 3), 40 * c, dtype=np.uint8)
        recording.push_chunk(frames, [int((c * 12 + i) * 1000 / FPS) for i in range(12)], [])
    return recording


def test_an_index_that_cannot_be_written_leaves_no_open_recording(tmp_path, monkeypatch):
    """The file opened, then the index write failed (a quota, a full disk): the file is closed
    and removed and its token is not left busy (a download would answer 409 for ever)."""
    desk = desk_in(tmp_path)
    index = desk.index

    def no_room(token, session):
        raise OSError(122, "Disk quota exceeded")

    monkeypatch.setattr(index, "started", no_room)
    with pytest.raises(OSError):
        desk.open("s1", W, H, FPS, RATE)
    assert not desk.active and not list(tmp_path.glob("*.mp4"))


def test_finishing_a_recording_applies_retention(tmp_path):
    """A server that records now and then still deletes what is past `max_days`: retention
    runs when a recording finishes, not only when the next one starts."""
    desk = desk_in(tmp_path, max_days=1.0)
    old = desk.finish(recorded(desk, "s1"))
    later = recorded(desk, "s2")  # begun while the first was still young
    week_ago = time.time() - 7 * 86400
    os.utime(tmp_path / f"{old.token}.mp4", (week_ago, week_ago))  # ... and it aged meanwhile
    new = desk.finish(later)
    assert not (tmp_path / f"{old.token}.mp4").exists()
    assert (tmp_path / f"{new.token}.mp4").exists()
    assert [e.token for e in desk.of_session("s2")] == [new.token] and not desk.of_session("s1")


def test_a_file_a_dead_server_left_is_listed_repaired_before_any_new_recording(tmp_path):
    """The server was killed while recording: the next process lists that file as finished
    (repaired, with why) for a resumed session, without having to record anything first."""
    first = desk_in(tmp_path)
    killed = recorded(first, "s1")
    killed.recorder._container.close()  # the process died: no trailer, the index says "recording"
    killed._live.release()  # and the kernel dropped its file lock (the lock file stays)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["recordings"][killed.token]["state"] == "recording"
    (listed,) = desk_in(tmp_path).of_session("s1")
    assert listed.state == "finished" and "stopped while recording" in (listed.problem or "")
    assert not (tmp_path / f"{killed.token}.mp4.lock").exists()


_OTHER_SERVER = """
import sys
import numpy as np
from comfyui_persona.headless.server.recording import RecordingDesk
desk = RecordingDesk(sys.argv[1], max_days=0.0, max_mb=0, min_free_mb=0, max_minutes=60.0)
recording = desk.open("theirs", 64, 48, 12.0, 24000)
for c in range(2):
    recording.push_chunk(np.full((12, 48, 64, 3), 40 * c, dtype=np.uint8), [int((c * 12 + i) * 1000 / 12) for i in range(12)], [])
print(recording.token, flush=True)
sys.stdin.read()  # recording until the test kills it
"""


def test_two_servers_sharing_a_folder_leave_each_others_live_files_alone(tmp_path):
    """A ComfyUI and a `persona serve` on one machine share the default folder: one's crash
    repair, retention and index writes must not cut, delete or forget the file the other is
    still writing, and once that one is killed its file is repaired like any other."""
    import signal
    import subprocess
    import sys

    with subprocess.Popen([sys.executable, "-c", _OTHER_SERVER, str(tmp_path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as other:
        try:
            theirs = other.stdout.readline().strip()
            assert theirs, "the other server did not start recording"
            size = (tmp_path / f"{theirs}.mp4").stat().st_size
            ours = desk_in(tmp_path, max_mb=1e-6)  # retention would delete every finished file but the newest
            older = ours.finish(recorded(ours, "mine"))  # repair and retention run on open and on finish
            mine = ours.finish(recorded(ours, "mine"))
            assert (tmp_path / f"{theirs}.mp4").stat().st_size == size, "their live file was cut or deleted"
            index = json.loads((tmp_path / "index.json").read_text())["recordings"]
            assert index[theirs]["state"] == "recording", "their entry was lost or marked finished"
            assert older.token not in index and mine.token in index  # our older one went to retention
        finally:
            other.send_signal(signal.SIGKILL)
            other.wait()
    (listed,) = desk_in(tmp_path).of_session("theirs")
    assert listed.state == "finished" and listed.frames > 0 and "stopped while recording" in (listed.problem or "")


def test_retention_keeps_the_file_just_finished_and_a_recording_stops_at_the_size_cap(tmp_path):
    """With a cap smaller than one recording, the file the viewer just stopped used to be
    deleted as it finished (while the answer gave its URL): it is kept, the older one goes, and
    a recording stops by itself, saying why, once its file reaches the cap."""
    desk = desk_in(tmp_path, max_mb=1e-6)
    first = desk.finish(recorded(desk, "s1"))
    assert first.kept and (tmp_path / f"{first.token}.mp4").exists()
    [listed] = desk.of_session("s1")
    assert listed.token == first.token and listed.state == "finished"
    second = recorded(desk, "s2", chunks=1)
    assert "size limit" in (second.stop_reason or "")
    desk.finish(second)
    assert not (tmp_path / f"{first.token}.mp4").exists() and (tmp_path / f"{second.token}.mp4").exists()


def test_a_recording_stopped_before_its_first_frame_keeps_no_file(tmp_path):
    """record on, record off before a chunk came (a double-click): a header with no frame is no
    video a player opens; it is deleted and forgotten, not listed and served."""
    desk = desk_in(tmp_path)
    result = desk.finish(recorded(desk, "s1", chunks=0))
    assert result.frames == 0 and not result.kept
    assert not list(tmp_path.glob("*.mp4")) and not desk.of_session("s1")


def test_a_file_another_server_left_when_it_died_is_repaired_when_listed(tmp_path):
    """Two processes share the folder and the other dies after this one started (its start-up
    repair already ran): the entry is still repaired when a resumed session lists it."""
    ours = desk_in(tmp_path)
    assert ours.of_session("s1") == []  # this process's start-up repair has run
    theirs = recorded(desk_in(tmp_path), "s1")
    theirs.recorder._container.close()  # that process died: no trailer, its lock released
    theirs._live.release()
    (listed,) = ours.of_session("s1")
    assert listed.state == "finished" and listed.frames > 0 and "stopped while recording" in (listed.problem or "")


def test_frames_of_another_size_stop_the_recording_and_say_why(tmp_path):
    desk = desk_in(tmp_path)
    recording = recorded(desk, "s1", chunks=1)
    recording.push_chunk(np.zeros((12, H * 2, W * 2, 3), dtype=np.uint8), [2000 + i * 83 for i in range(12)], [])
    assert recording.stop_reason and "stopped" in recording.stop_reason
    desk.finish(recording)
    assert not desk.active


async def test_a_file_another_server_is_writing_is_not_served_for_download(service, tmp_path):
    """The download route answers 409 for a file being written by another process sharing the
    folder, as for its own: a partial file is not a recording (the cluster route, reading other
    replicas' folders, checks the same lock)."""
    import asyncio
    import signal
    import subprocess
    import sys

    import aiohttp

    service.recordings_dir = tmp_path
    with subprocess.Popen([sys.executable, "-c", _OTHER_SERVER, str(tmp_path)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as other:
        try:
            theirs = (await asyncio.to_thread(other.stdout.readline)).strip()
            assert theirs, "the other server did not start recording"
            async with running(service) as server, aiohttp.ClientSession() as http:
                async with http.get(f"{server.http_url}/persona/recordings/{theirs}.mp4") as answer:
                    assert answer.status == 409 and (await answer.json())["code"] == "recording"
                async with http.get(f"{server.http_url}/persona/recordings/{'Z' * 32}.mp4") as answer:
                    assert answer.status == 404
            assert not list(tmp_path.glob("Z" * 32 + "*")), "asking for a token left a file"  # not "Z*": theirs may start with Z
        finally:
            other.send_signal(signal.SIGKILL)
            other.wait()
