"""Lip-sync of the WebRTC media as a browser plays them: the real server (preview renderer,
espeak-ng speech) streams to the chat page in Chromium over WebRTC while the persona says the
sync text, and two captures of the same speech are measured with the meter `benchmarks/av_sync.py`
uses on the server's MP4 recordings (video/voice/av_sync.py `measure`: voiced onsets against
mouth openings; offset = mouth − audio, positive: the mouth opens after the sound). Goal
(issue 21): p95 of |offset| ≤ 45 ms.

- **played** (`played_*`, the figure to judge by): what the page shows and sounds. Every picture
  the <video> element presents (requestVideoFrameCallback) has its mouth region read at its
  `expectedDisplayTime`; the remote audio runs through an AudioWorklet and each sample is placed
  at the time the AudioContext outputs it (`getOutputTimestamp`, whose output latency matches the
  element's own audio playout delay, `element_audio_playout_delay_ms`). Both on
  performance.now(), written to one lossless file and measured (browser_media.PlayoutCapture).
- **WebM** (`webm_*`): a MediaRecorder of the remote stream, the tracks as the receiver hands
  them on, stamped by the recorder's muxer (video by RTP time, audio by sample count).
- Chromium's own view (`playout_skew_*`): `estimatedPlayoutTimestamp` of the audio minus that of
  the video (getStats; both on the sender's clock through the RTCP sender reports): negative =
  the audio being heard left the server before the picture being shown.

Measured once Chromium's lip-sync has settled (`settle_s`: its skew steady for 5 s). With
`--plant-audio-ms`, every other run starts the server's speech that much after its pictures in
the same session: each meter must move by it (`*_recovered_delay_ms`).

What the offset was and where it came from: aiortc's Opus path stamped the sound 26.5 ms later
than it was (headless/server/webrtc_tracks.py AudioTrack says how; the track now encodes and
paces its own packets). Then the receiver's: Chromium's lip-sync counts neither the sound's
output latency nor the picture's wait for display, and stops within its own tolerance; the page
reports the sum (`webrtc.playout`) and the server sends speech that much ahead. Each run
records the lead the server held (`reported_audio_lag_ms`, before and after the run) and what
the page computed it from (`page_audio_lag`). `--audio-lead-ms` adds a constant lead on top (the
experiment that led there). Last, a reply's first mouth opening, which the preview drew late
(its speech layer faded in from the first shape, and again when a sentence was handed over
during that opening: video/preview/visemes.py `Speech`). docs/server.md "WebRTC media" gives
the decomposition and the result files the numbers.

    .venv/bin/python benchmarks/webrtc_av_sync.py               # 3 runs, writes webrtc_av_sync-cpu-<date>.json
    .venv/bin/python benchmarks/webrtc_av_sync.py --runs 4 --plant-audio-ms 80 --suffix planted80
    .venv/bin/python benchmarks/webrtc_av_sync.py --runs 1 --no-save
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from record import REPO, cpu_model, ensure_package, result_path, write_result

ensure_package()
sys.path.insert(0, str(REPO / "tests"))  # the test harness's real server on port 0

from browser_media import (  # noqa: E402
    ARGS,
    CHROMIUM,
    record_speech_received,
    sample_playout_skew,
    settle_playout_skew,
    start_playout_capture,
    stop_playout_capture,
    sync_spec,
)


def _row(report) -> dict:
    return {"onsets_audio": report.audio_onsets, "onsets_matched": len(report.offsets_ms),
            "offsets_ms": [round(v, 1) for v in report.offsets_ms],
            "frame_offsets_ms": [round(v, 1) for v in report.frame_offsets_ms]}


async def measure_runs(runs: int, text: str, folder: Path, jitter_ms: int = 0, plant_ms: float = 0.0,
                       lead_ms: float = 0.0) -> dict:
    from playwright.async_api import async_playwright

    from comfyui_persona.video.voice.av_sync import measure, mouth_roi
    from server_harness import make_service, running

    service = await asyncio.to_thread(make_service)
    await asyncio.to_thread(service.warm_up)
    rows = []
    try:
        async with running(service) as server, async_playwright() as pw:
            browser = await pw.chromium.launch_persistent_context(  # bypass_csp: the probe's worklet is a blob:
                str(folder / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True, bypass_csp=True)
            try:
                page = browser.pages[0] if browser.pages else await browser.new_page()
                query = "/?media=webrtc" + (f"&jitter={jitter_ms}" if jitter_ms else "")
                await page.goto(server.http_url + query, timeout=30000)
                ready = await page.evaluate("""() => new Promise((resolve) => {
                  const check = () => window.personaRtc.transport === 'webrtc' && window.personaRtc.frames >= 24
                    ? resolve(window.personaRtc.client.ready) : setTimeout(check, 100);
                  check(); })""")
                spec = sync_spec(ready["persona"]["id"], 384, 384, 24.0)
                roi = await asyncio.to_thread(mouth_roi, spec)
                settled_s = await settle_playout_skew(page)
                print(f"Chromium's lip-sync settled after {settled_s} s", flush=True)
                for n in range(runs):
                    planted = plant_ms if n % 2 else 0.0  # every other run, in the one session
                    for peer in service.webrtc.peers.values():
                        peer.audio_track.speech_delay_s = (planted - lead_ms) / 1000.0
                    stop = asyncio.Event()
                    sampler = asyncio.get_running_loop().create_task(sample_playout_skew(page, stop))
                    leads = [peer.clock.audio_lead_s * 1000.0 for peer in service.webrtc.peers.values()]
                    audio = await start_playout_capture(page, roi)
                    path = await record_speech_received(page, text, folder / f"received-{n}.webm")
                    capture = await stop_playout_capture(page, roi, audio["rate"])
                    stop.set()
                    skew = await sampler
                    played = await asyncio.to_thread(capture.write, folder / f"played-{n}.mkv", audio["rate"])
                    crop = (0, capture.crops.shape[1], 0, capture.crops.shape[2])
                    report = await asyncio.to_thread(measure, path, roi)
                    shown = await asyncio.to_thread(measure, played, crop)
                    leads += [peer.clock.audio_lead_s * 1000.0 for peer in service.webrtc.peers.values()]
                    parts = await page.evaluate("window.personaRtc.audioLag")  # {outputMs, displayMs, skewMs, lag}
                    rows.append({**_row(report), "planted_audio_delay_ms": planted, "playout_skew_ms": skew,
                                 "reported_audio_lag_ms": leads, "page_audio_lag": parts, "played": {
                        **_row(shown), "missed_frames": capture.missed_frames,
                        "pictures": int(capture.crops.shape[0]),
                        "audio_context_base_latency_ms": round(audio["baseLatency"] * 1000, 2),
                        "audio_context_output_latency_ms": round(capture.output_latency_ms, 2),
                        "output_clock_spread_ms": round(capture.clock_spread_ms, 2),
                        "element_audio_playout_delay_ms": capture.element_playout_delay_ms,
                        "display_wait_ms": round(float(np.mean(capture.display_ms - capture.presentation_ms)), 2)}})
                    print(f"run {n} (audio planted {planted:g} ms late): WebM {len(report.offsets_ms)}/{report.audio_onsets} onsets matched, offsets "
                          f"{np.round(report.offsets_ms).astype(int).tolist()} ms; played "
                          f"{len(shown.offsets_ms)}/{shown.audio_onsets}, offsets "
                          f"{np.round(shown.offsets_ms).astype(int).tolist()} ms ({capture.missed_frames} pictures "
                          f"missed; AudioContext base/output latency {audio['baseLatency'] * 1000:.1f}/{capture.output_latency_ms:.1f} ms, "
                          f"output clock spread {capture.clock_spread_ms:.1f} ms, element audio playout delay "
                          f"{capture.element_playout_delay_ms} ms, display wait {np.mean(capture.display_ms - capture.presentation_ms):.1f} ms); Chromium's audio−video playout skew median "
                          f"{np.median(skew) if skew else float('nan'):.0f} ms; audio lag reported by the page (server's "
                          f"speech lead, before/after) {[round(v, 1) for v in leads]} ms, last computed from "
                          f"{ {k: round(v, 1) for k, v in (parts or {}).items()} }", flush=True)
            finally:
                await browser.close()
    finally:
        service.pool.shutdown(wait=True)
    out = summarise(rows)
    out["settle_s"] = settled_s
    return out


def _offsets(rows: list[dict], prefix: str = "") -> dict:
    offsets = np.asarray([v for r in rows for v in r["offsets_ms"]])
    whole = np.asarray([v for r in rows for v in r["frame_offsets_ms"]])
    return {
        f"{prefix}onsets_audio": sum(r["onsets_audio"] for r in rows),
        f"{prefix}onsets_matched": int(offsets.size),
        f"{prefix}offset_ms_mean": float(offsets.mean()) if offsets.size else None,
        f"{prefix}offset_ms_p50": float(np.median(offsets)) if offsets.size else None,
        f"{prefix}abs_offset_ms_p95": float(np.percentile(np.abs(offsets), 95)) if offsets.size else None,
        f"{prefix}abs_offset_ms_p95_whole_frames": float(np.percentile(np.abs(whole), 95)) if whole.size else None,
    }


def summarise(rows: list[dict]) -> dict:
    """The figures over the runs without a planted offset; with planted runs, how far each meter
    moved between them and the others (it should read the planted delay)."""
    plain = [r for r in rows if not r["planted_audio_delay_ms"]]
    planted = [r for r in rows if r["planted_audio_delay_ms"]]
    skew = np.asarray([v for r in plain for v in r["playout_skew_ms"]])
    out = {
        **_offsets([r["played"] for r in plain], "played_"),
        **_offsets(plain, "webm_"),
        "playout_skew_ms_median": float(np.median(skew)) if skew.size else None,
        "playout_skew_ms_p05": float(np.percentile(skew, 5)) if skew.size else None,
        "playout_skew_ms_p95": float(np.percentile(skew, 95)) if skew.size else None,
        "goal_abs_offset_ms_p95": 45.0,
    }
    if planted:
        late = _offsets([r["played"] for r in planted], "p_")
        late_webm = _offsets(planted, "w_")
        out["planted_audio_delay_ms"] = planted[0]["planted_audio_delay_ms"]
        out["played_recovered_delay_ms"] = out["played_offset_ms_mean"] - late["p_offset_ms_mean"]
        out["webm_recovered_delay_ms"] = out["webm_offset_ms_mean"] - late_webm["w_offset_ms_mean"]
        moved = np.asarray([v for r in planted for v in r["playout_skew_ms"]])
        out["playout_skew_ms_median_planted_runs"] = float(np.median(moved)) if moved.size else None
    out["runs"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    from comfyui_persona.video.voice.av_sync import SYNC_TEXT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="times the sync text is spoken (one page, one session)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--suffix", default="", help="appended to the result file's name")
    parser.add_argument("--plant-audio-ms", type=float, default=0.0,
                        help="in every other run, start the server's speech this much after its pictures "
                        "(validates the meters: they should move by it)")
    parser.add_argument("--audio-lead-ms", type=float, default=0.0,
                        help="in every run, start the server's speech this much before its pictures: a constant "
                        "compensation of the receiver's audio output latency, for comparison")
    parser.add_argument("--jitter-ms", type=int, default=0,
                        help="the page's receiver jitterBufferTarget (?jitter=MS); 0: the browser's own")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Chromium at {CHROMIUM} (scripts/setup.sh test)")
    with tempfile.TemporaryDirectory() as tmp:
        metrics = asyncio.run(measure_runs(args.runs, SYNC_TEXT, Path(tmp), args.jitter_ms, args.plant_audio_ms,
                                           args.audio_lead_ms))
    for name, prefix in (("played", "played_"), ("WebM", "webm_")):
        print(f"{name}: {metrics[prefix + 'onsets_matched']}/{metrics[prefix + 'onsets_audio']} onsets matched; "
              f"offset mean {metrics[prefix + 'offset_ms_mean']:.1f} ms, p95 |offset| "
              f"{metrics[prefix + 'abs_offset_ms_p95']:.1f} ms (goal ≤ 45)")
    print(f"Chromium playout skew median {metrics['playout_skew_ms_median']:.0f} ms")
    if "planted_audio_delay_ms" in metrics:
        print(f"planted {metrics['planted_audio_delay_ms']:g} ms: the played measure moved "
              f"{metrics['played_recovered_delay_ms']:.1f} ms, the WebM {metrics['webm_recovered_delay_ms']:.1f} ms")
    if not args.no_save:
        config = {"runs": args.runs, "text": SYNC_TEXT, "size": "384x384", "fps": 24, "backend": "preview",
                  "browser": "Debian chromium, headless; played: requestVideoFrameCallback + AudioWorklet on "
                             "performance.now(); WebM: MediaRecorder (VP8+Opus) of the remote stream",
                  "link": "loopback, no impairment", "persona": "server default",
                  "jitter_buffer_target_ms": args.jitter_ms or "browser default",
                  "planted_audio_delay_ms": args.plant_audio_ms, "audio_lead_ms": args.audio_lead_ms, "load_avg_1min": os.getloadavg()[0]}
        path = result_path("webrtc_av_sync", "cpu", args.suffix)
        write_result(path, "webrtc_av_sync", cpu_model(), config, metrics)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
