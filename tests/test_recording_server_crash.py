"""A `persona serve` process SIGKILLed in the middle of a recording leaves a playable MP4.

The real CLI in a subprocess on port 0 with `--recordings tmpdir`; a websocket client starts
a recording and makes the persona speak; the process is killed without warning; the partial
file is then opened with PyAV and its frames (and speech) decode in order.
"""

import asyncio
import json
import re
import signal
import sys
import time

import numpy as np
import websockets

from comfyui_persona.headless.server.protocol import MEDIA_AUDIO, parse_media_frame
from paths import REPO
from server_harness import hello, next_frame, wait_for_type

SPEECH = "Hello! I am being recorded right now. If the server dies, this file should still play."


async def test_sigkill_mid_recording_leaves_a_playable_mp4(tmp_path):
    import av

    recordings = tmp_path / "recordings"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyui_persona.headless", "serve", "--port", "0", "--no-warm-up", "--quiet",
        "--recordings", str(recordings), "--personas-dir", str(tmp_path / "personas"),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    killed = False
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        async with websockets.connect(f"ws://127.0.0.1:{port}/persona/ws", max_size=None, open_timeout=30) as ws:
            await hello(ws)
            await next_frame(ws, timeout=30)
            await ws.send(json.dumps({"type": "record", "id": "r1", "on": True}))
            await wait_for_type(ws, "recording", reply_to="r1", timeout=30)
            started = time.monotonic()
            await ws.send(json.dumps({"type": "action", "id": "a1", "directive": {
                "action": "wave", "expression": "smile", "intensity": 0.8, "dialogue": SPEECH}}))
            # Kill 4 s in, and not before speech has been flowing for 2.5 s (on a loaded box the
            # turn and the synthesis can take a while): a flushed fragment then holds some of it.
            heard = None
            while True:
                data = await asyncio.wait_for(ws.recv(), 10)
                now = time.monotonic()
                if heard is None and isinstance(data, bytes) and parse_media_frame(data)[0] == MEDIA_AUDIO:
                    heard = now
                if now - started >= 4.0 and heard is not None and now - heard >= 2.5:
                    break
                assert now - started < 30, "no speech reached the client within 30 s"
            process.kill()  # SIGKILL: no shutdown handler runs
            killed = True
            recorded_s = time.monotonic() - started
    finally:
        # Not a second kill after the first: Popen.send_signal polls (waitpid) first and could
        # reap the dead server before asyncio's watcher thread does, which then reports 255.
        if not killed and process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == -signal.SIGKILL

    files = list(recordings.glob("*.mp4"))
    assert len(files) == 1, files
    with av.open(str(files[0])) as container:
        assert container.streams.audio and container.streams.video
        pts = [frame.pts for frame in container.decode(video=0)]
    with av.open(str(files[0])) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    print(f"killed after {recorded_s:.2f} s of recording: {len(pts)} frames ({len(pts) / 24:.2f} s) decode, "
          f"{samples.size / 22050:.2f} s of audio")
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    # Fragments are cut every second: at most about a second is lost (24 fps, some slack
    # for a busy box that renders below real time).
    assert len(pts) >= (recorded_s - 1.5) * 24 * 0.8, (len(pts), recorded_s)
    assert float(np.abs(samples).max()) > 0.05  # the speech made it in
