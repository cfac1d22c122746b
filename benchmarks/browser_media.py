"""What a browser receives from the persona server, measured in the page: shared by the WebRTC
browser benchmarks (webrtc_av_sync.py, transport.py --browser) and their tests.

Three probes run inside Chromium (Playwright, Debian's /usr/bin/chromium):

- `start_playout_capture` / `stop_playout_capture`: what the page plays, as a viewer gets it.
  Each picture the <video> element presents (requestVideoFrameCallback) has its mouth region
  copied at its `expectedDisplayTime`; the remote audio goes through an AudioWorklet that keeps
  every sample with its AudioContext frame, mapped to the time it is output through
  `getOutputTimestamp()`. Both land on performance.now(), are written as one lossless file
  (`PlayoutCapture.write`) and measured by the meter every A/V figure of the project uses
  (video/voice/av_sync.py `measure`).
- `record_speech_received`: a MediaRecorder on the <video> element's remote stream (the tracks
  as the receiver hands them on) records WebM (VP8 + Opus), measured by the same meter. Its
  muxer stamps audio by sample count from the recording's start, so it says nothing about the
  audio's output delay; kept beside the played measure for comparison.
- `FRAME_COUNTER_JS`: on every animation frame, the page reads the picture it is showing (the
  chat page's <canvas> for JPEG over the WebSocket, the <video> element for WebRTC) and decodes
  the frame counter the benchmark drew into it (`stamp_counter`), noting the wall-clock time
  a counter value is first on screen. The server side notes when it drew it; both read the
  same machine's clock (`time.time()` and `performance.timeOrigin + performance.now()`).
"""

from __future__ import annotations

import base64
import contextlib
import fractions
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


async def settle_playout_skew(page, limit_ms: float = 30.0, steady_ms: float = 6.0, hold: int = 20,
                              every_s: float = 0.25, timeout_s: float = 45.0) -> float | None:
    """Seconds until Chromium's own A/V alignment (`PLAYOUT_SKEW_JS`) has stayed within
    ±`limit_ms` and within `steady_ms` of itself for `hold` samples in a row; None if it did not
    within `timeout_s`. A receiver starts with its audio jitter buffer far from the video's, and
    its lip-sync moves the video's delay towards the audio's over ten seconds or more: a
    steady-state figure is measured once that has stopped moving."""
    import asyncio

    loop = asyncio.get_running_loop()
    began = loop.time()
    window: list[float] = []
    while loop.time() - began < timeout_s:
        value = await page.evaluate(PLAYOUT_SKEW_JS)
        window = [*window, value][-hold:] if value is not None and abs(value) <= limit_ms else []
        if len(window) == hold and max(window) - min(window) <= steady_ms:
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


# -- what the page plays: pictures at their display time, sound at its output time -------------

#: The AudioWorklet that copies what the graph's input holds at each render quantum, with the
#: context frame it plays at (batches of contiguous quanta, channels averaged).
_TAP_WORKLET = """
class Tap extends AudioWorkletProcessor {
  constructor() { super(); this.buf = new Float32Array(4096); this.n = 0; this.first = 0; }
  process(inputs) {
    const channels = inputs[0] || [];
    if (this.n && currentFrame !== this.first + this.n) this.flush();
    if (!this.n) this.first = currentFrame;
    const out = this.buf.subarray(this.n, this.n + 128);
    out.fill(0);
    for (const ch of channels) for (let i = 0; i < ch.length; i++) out[i] += ch[i] / channels.length;
    this.n += 128;
    if (this.n >= this.buf.length) this.flush();
    return true;
  }
  flush() { this.port.postMessage({ frame: this.first, samples: this.buf.slice(0, this.n) }); this.n = 0; }
}
registerProcessor('persona-tap', Tap);
"""

#: Installs `window.__playout` on the page's #rtc-video: every picture the element presents
#: (requestVideoFrameCallback: the frame about to be shown, its `expectedDisplayTime`) has the
#: mouth region `[y0, y1, x0, x1]` (video pixels) copied out of it; the remote stream's audio
#: runs through an AudioWorklet that keeps every sample with its AudioContext frame, and
#: `getOutputTimestamp()` pairs are sampled every 50 ms to map context time to
#: performance.now() at the output. Needs a context with `bypass_csp` (the worklet is a blob:).
PLAYOUT_START_JS = """async ([y0, y1, x0, x1, worklet]) => {
  const video = document.getElementById('rtc-video');
  const w = x1 - x0, h = y1 - y0;
  const canvas = document.createElement('canvas');
  canvas.width = w; canvas.height = h;
  const g = canvas.getContext('2d', { willReadFrequently: true });
  const probe = { frames: [], crops: [], audio: [], clock: [], running: true, missed: 0, last: null };
  window.__playout = probe;
  const onFrame = (now, md) => {
    if (!probe.running) return;
    if (probe.last !== null && md.presentedFrames > probe.last + 1) probe.missed += md.presentedFrames - probe.last - 1;
    probe.last = md.presentedFrames;
    g.drawImage(video, x0, y0, w, h, 0, 0, w, h);
    probe.crops.push(g.getImageData(0, 0, w, h).data);
    probe.frames.push([md.expectedDisplayTime, md.presentationTime, now]);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const ctx = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: 'text/javascript' })));
  const source = ctx.createMediaStreamSource(video.srcObject);
  const tap = new AudioWorkletNode(ctx, 'persona-tap');
  const silent = ctx.createGain();
  silent.gain.value = 0;  // pulled by the graph, heard only through the <video> element
  source.connect(tap).connect(silent).connect(ctx.destination);
  tap.port.onmessage = (event) => probe.audio.push(event.data);
  await ctx.resume();
  probe.ctx = ctx;
  probe.timer = setInterval(() => {
    const t = ctx.getOutputTimestamp();
    if (t.contextTime > 0) probe.clock.push([t.contextTime, t.performanceTime]);
  }, 50);
  return { rate: ctx.sampleRate, baseLatency: ctx.baseLatency, outputLatency: ctx.outputLatency };
}"""

PLAYOUT_STOP_JS = """async () => {
  const probe = window.__playout;
  probe.running = false;
  clearInterval(probe.timer);
  const outputLatency = probe.ctx.outputLatency;
  await probe.ctx.close();
  let playout = null;
  (await window.personaRtc.pc.getStats()).forEach((s) => {
    if (s.type === 'media-playout' && s.totalSamplesCount) playout = s.totalPlayoutDelay / s.totalSamplesCount;
  });
  const b64 = (bytes) => {
    let text = '';
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(text);
  };
  const size = probe.crops.reduce((n, c) => n + c.length, 0);
  const crops = new Uint8Array(size);
  let at = 0;
  for (const c of probe.crops) { crops.set(c, at); at += c.length; }
  const count = probe.audio.reduce((n, a) => n + a.samples.length, 0);
  const samples = new Float32Array(count);
  at = 0;
  for (const a of probe.audio) { samples.set(a.samples, at); at += a.samples.length; }
  return { frames: probe.frames, crops: b64(crops), audioFrames: probe.audio.map((a) => [a.frame, a.samples.length]),
           samples: b64(new Uint8Array(samples.buffer)), clock: probe.clock, missed: probe.missed, outputLatency, playout };
}"""


class PlayoutCapture:
    """What the page played, on performance.now() (ms): the mouth region of every shown
    picture at its display time, the remote audio at the time its samples are output."""

    def __init__(self, raw: dict, roi: tuple[int, int, int, int], rate: int) -> None:
        y0, y1, x0, x1 = roi
        frames = np.asarray(raw["frames"], dtype=np.float64).reshape(-1, 3)
        crops = np.frombuffer(base64.b64decode(raw["crops"]), dtype=np.uint8)
        self.display_ms = frames[:, 0]  # expectedDisplayTime
        self.presentation_ms = frames[:, 1]
        #: The element's audio output delay as Chromium counts it (RTCAudioPlayoutStats).
        self.element_playout_delay_ms = None if raw["playout"] is None else float(raw["playout"]) * 1000.0
        self.crops = crops.reshape(len(frames), y1 - y0, x1 - x0, 4)[..., :3]
        self.missed_frames = int(raw["missed"])
        clock = np.asarray(raw["clock"], dtype=np.float64).reshape(-1, 2)
        if not len(clock):
            raise RuntimeError("the AudioContext gave no output timestamp")
        # performance ms = context s * 1000 + offset; the context clock runs at the output's rate
        offsets = clock[:, 1] - clock[:, 0] * 1000.0
        self.clock_offset_ms = float(np.median(offsets))
        self.clock_spread_ms = float(np.percentile(offsets, 95) - np.percentile(offsets, 5))
        self.output_latency_ms = float(raw["outputLatency"]) * 1000.0
        samples = np.frombuffer(base64.b64decode(raw["samples"]), dtype="<f4")
        times = [(frame + np.arange(count)) * 1000.0 / rate + self.clock_offset_ms
                 for frame, count in raw["audioFrames"]]
        self.audio_ms = np.concatenate(times) if times else np.zeros(0)
        self.samples = samples.astype(np.float64)

    def write(self, path: Path, rate: int) -> Path:
        """The capture as a Matroska file (lossless FFV1 picture, PCM sound, both stamped in ms
        of performance.now() since the first picture) that `video.voice.av_sync.measure` reads
        with the crop as its region: one meter for recordings, WebM and what was played."""
        import av

        origin = float(min(self.display_ms[0], self.audio_ms[0] if self.audio_ms.size else np.inf))
        with av.open(str(path), "w", format="matroska") as out:
            video = out.add_stream("ffv1", rate=1000)
            video.width, video.height = self.crops.shape[2], self.crops.shape[1]
            video.pix_fmt = "bgr0"
            video.time_base = fractions.Fraction(1, 1000)
            audio = out.add_stream("pcm_s16le", rate=rate, layout="mono")
            audio.time_base = fractions.Fraction(1, rate)
            last = -1
            for crop, shown in zip(self.crops, self.display_ms, strict=True):
                pts = round(shown - origin)
                if pts <= last:
                    continue  # one picture per ms on the file's clock (two in one ms: the first)
                last = pts
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(crop), format="rgb24")
                frame.pts, frame.time_base = pts, fractions.Fraction(1, 1000)
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            pcm = np.clip(np.round(self.samples * 32767.0), -32768, 32767).astype("<i2")
            start = (self.audio_ms - origin) * rate / 1000.0
            block = rate // 50
            for i in range(0, pcm.size, block):
                frame = av.AudioFrame.from_ndarray(pcm[None, i : i + block], format="s16", layout="mono")
                frame.sample_rate = rate
                frame.pts, frame.time_base = round(start[i]), fractions.Fraction(1, rate)
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
        return path


async def start_playout_capture(page, roi: tuple[int, int, int, int]) -> dict:
    """Start `PLAYOUT_START_JS` for the mouth region `roi` = (y0, y1, x0, x1); the AudioContext's
    rate and latencies."""
    return await page.evaluate(PLAYOUT_START_JS, [*roi, _TAP_WORKLET])


async def stop_playout_capture(page, roi: tuple[int, int, int, int], rate: int) -> PlayoutCapture:
    return PlayoutCapture(await page.evaluate(PLAYOUT_STOP_JS), roi, rate)
