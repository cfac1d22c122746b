"""What a browser receives from the persona server, measured in the page: shared by the WebRTC
browser benchmarks (webrtc_av_sync.py, transport.py --browser) and their tests.

Two probes run inside Chromium (Playwright, Debian's /usr/bin/chromium):

- `record_received`: a MediaRecorder on the <video> element's remote stream (the WebRTC video
  and audio tracks as the browser's receiver delivers them, after its jitter buffers and its
  lip-sync alignment) records WebM (VP8 + Opus). The file is then measured exactly as
  `benchmarks/av_sync.py` measures the server's MP4 recordings (video/voice/av_sync.py: voiced
  onsets in the audio against mouth openings in the picture).
- `FRAME_COUNTER_JS`: on every animation frame, the page reads the picture it is showing (the
  chat page's <canvas> for JPEG over the WebSocket, the <video> element for WebRTC) and decodes
  the frame counter the benchmark drew into it (`stamp_counter`), noting the wall-clock time
  a counter value is first on screen. The server side notes when it drew it; both read the
  same machine's clock (`time.time()` and `performance.timeOrigin + performance.now()`).

Why MediaRecorder rather than WebAudio plus requestVideoFrameCallback: one recorder stamps
both tracks on the one clock its muxer uses, and the file goes through the same, already
validated onset detectors as every other A/V figure of the project.
"""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
#: Debian's Chromium headless, nothing phoning home
QUIET_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: and media may play without a click (the persona speaks)
ARGS = [*QUIET_ARGS, "--autoplay-policy=no-user-gesture-required"]


@contextlib.asynccontextmanager
async def chromium_page(pw, profile: Path, *, args: list[str] = ARGS, **options):
    """(page, errors): the first page of a Chromium with its own profile folder, and the list its
    uncaught page errors collect into; closed on exit. `options` go to Playwright's
    `launch_persistent_context` (viewport, accept_downloads...)."""
    browser = await pw.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=args, headless=True, **options)
    try:
        page = browser.pages[0] if browser.pages else await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page, errors
    finally:
        await browser.close()

# -- frame counter -------------------------------------------------------------------------------

#: Counter bits drawn as black/white cells along the top edge, each bit followed by its
#: complement (a read is valid only if every pair differs: a half-blended frame is rejected).
COUNTER_BITS = 12
CELL = 16  # px: big enough to survive H.264/VP8 at a few hundred kbit/s and JPEG q80


def stamp_counter(rgb: np.ndarray, value: int) -> np.ndarray:
    """A copy of `rgb` with `value` (mod 2**COUNTER_BITS) drawn in its top-left cells."""
    out = np.array(rgb, copy=True)
    for bit in range(COUNTER_BITS):
        on = (value >> bit) & 1
        x = 2 * bit * CELL
        out[:CELL, x : x + CELL] = 255 if on else 0
        out[:CELL, x + CELL : x + 2 * CELL] = 0 if on else 255
    return out


#: Installs `window.__counter`: {seen: {value: wall ms first shown}, reads, rejects}. Reads
#: the visible one of #video (canvas) and #rtc-video (video) on every animation frame.
FRAME_COUNTER_JS = f"""() => {{
  const BITS = {COUNTER_BITS}, CELL = {CELL};
  const probe = document.createElement('canvas');
  probe.width = 2 * BITS * CELL; probe.height = CELL;
  const ctx = probe.getContext('2d', {{ willReadFrequently: true }});
  const state = {{ seen: {{}}, reads: 0, rejects: 0, last: -1 }};
  window.__counter = state;
  const tick = () => {{
    const now = performance.timeOrigin + performance.now();
    const video = document.getElementById('rtc-video');
    const canvas = document.getElementById('video');
    const source = !video.hidden && video.videoWidth ? video : canvas;
    if (source.width || source.videoWidth) {{
      ctx.drawImage(source, 0, 0, probe.width, probe.height, 0, 0, probe.width, probe.height);
      const px = ctx.getImageData(0, 0, probe.width, probe.height).data;
      const luma = (x) => {{ const i = ((CELL >> 1) * probe.width + x) * 4; return px[i] + px[i + 1] + px[i + 2]; }};
      let value = 0, ok = true;
      for (let b = 0; b < BITS; b++) {{
        const on = luma(2 * b * CELL + (CELL >> 1)) > 382, off = luma((2 * b + 1) * CELL + (CELL >> 1)) > 382;
        if (on === off) {{ ok = false; break; }}
        if (on) value |= 1 << b;
      }}
      state.reads++;
      if (!ok) state.rejects++;
      else if (value !== state.last) {{
        state.last = value;
        if (!(value in state.seen)) state.seen[value] = now;
      }}
    }}
    requestAnimationFrame(tick);
  }};
  requestAnimationFrame(tick);
}}"""


# -- recording the received media ------------------------------------------------------------------

RECORD_START_JS = """() => {
  const stream = document.getElementById('rtc-video').srcObject;
  const recorder = new MediaRecorder(stream, { mimeType: 'video/webm;codecs=vp8,opus', videoBitsPerSecond: 4000000 });
  window.__recording = { recorder, chunks: [] };
  recorder.ondataavailable = (event) => window.__recording.chunks.push(event.data);
  recorder.start(500);
  return stream.getTracks().map((t) => t.kind).sort().join(',');
}"""

RECORD_STOP_JS = """async () => {
  const { recorder, chunks } = window.__recording;
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.stop();
  await stopped;
  const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}"""

#: Resolves once the persona has started speaking and then been quiet for `quietMs`
#: (`state.speaking` goes false between sentences too).
SPOKEN_JS = """([directive, quietMs]) => new Promise((resolve) => {
  const client = window.personaRtc.client;
  let started = false, timer = null;
  client.addEventListener('state', (event) => {
    const speaking = event.detail.state?.speaking;
    if (speaking) { started = true; clearTimeout(timer); timer = null; }
    else if (started && timer === null) timer = setTimeout(() => resolve(true), quietMs);
  });
  client.action(directive);
})"""


async def record_speech_received(page, text: str, out: Path, tail_s: float = 0.6) -> Path:
    """Record the page's remote stream while the persona says `text` (a manual action with
    dialogue, so no interpreter is involved); the WebM lands at `out`."""
    import asyncio

    tracks = await page.evaluate(RECORD_START_JS)
    if tracks != "audio,video":
        raise RuntimeError(f"the remote stream has tracks {tracks!r}, not audio and video")
    await asyncio.sleep(0.5)  # a little rest before the first onset
    directive = {"action": "idle", "expression": "neutral", "dialogue": text, "intensity": 0.5}
    await asyncio.wait_for(page.evaluate(SPOKEN_JS, [directive, 1500]), 120)
    await asyncio.sleep(tail_s)  # the last sentence's audio is still in the jitter buffer
    out.write_bytes(base64.b64decode(await page.evaluate(RECORD_STOP_JS)))
    return out


#: Chromium's own view of the two streams' alignment: the sender-clock capture time of the
#: audio being played minus that of the picture being shown (getStats
#: `estimatedPlayoutTimestamp`, mapped through the RTCP sender reports), in ms.
PLAYOUT_SKEW_JS = """async () => {
  let audio = null, video = null;
  (await window.personaRtc.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp' || !s.estimatedPlayoutTimestamp) return;
    if (s.kind === 'audio') audio = s.estimatedPlayoutTimestamp; else video = s.estimatedPlayoutTimestamp;
  });
  return audio === null || video === null ? null : audio - video;
}"""


async def sample_playout_skew(page, stop, every_s: float = 0.25) -> list[float]:
    """`PLAYOUT_SKEW_JS` every `every_s` until the event `stop` is set."""
    import asyncio

    values = []
    while not stop.is_set():
        value = await page.evaluate(PLAYOUT_SKEW_JS)
        if value is not None:
            values.append(float(value))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except asyncio.TimeoutError:
            pass
    return values


async def settle_playout_skew(page, limit_ms: float = 30.0, hold: int = 8, every_s: float = 0.25,
                              timeout_s: float = 20.0) -> float | None:
    """Seconds until Chromium's own A/V alignment (`PLAYOUT_SKEW_JS`) has stayed within
    ±`limit_ms` for `hold` samples in a row; None if it did not within `timeout_s`. A receiver
    starts with its audio jitter buffer far from the video's and its lip-sync moves the two
    together over a few seconds: a steady-state figure is measured after that."""
    import asyncio

    loop = asyncio.get_running_loop()
    began = loop.time()
    streak = 0
    while loop.time() - began < timeout_s:
        value = await page.evaluate(PLAYOUT_SKEW_JS)
        streak = streak + 1 if value is not None and abs(value) <= limit_ms else 0
        if streak >= hold:
            return loop.time() - began
        await asyncio.sleep(every_s)
    return None


def sync_spec(persona_id: str, width: int, height: int, fps: float, seed: int = 0):
    """The SessionSpec the server's preview renderer runs for a built-in persona (for the mouth's
    region, `video.voice.av_sync.mouth_roi`)."""
    from comfyui_persona.persona.library import PersonaLibrary
    from comfyui_persona.video.backend import SessionSpec

    persona = PersonaLibrary().get(persona_id)
    return SessionSpec(persona.id, persona.name, persona.appearance.model_dump(), width, height, fps, seed=seed)
