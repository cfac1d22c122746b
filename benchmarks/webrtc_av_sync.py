"""Lip-sync of the WebRTC media as a browser receives them: the real server (preview renderer,
espeak-ng speech) streams to the chat page in Chromium over WebRTC; the page records its remote
stream (MediaRecorder: the tracks as the receiver delivers them) while the persona says the
sync text, and the WebM is measured exactly as `benchmarks/av_sync.py` measures the server's
MP4 recordings (video/voice/av_sync.py: voiced onsets against mouth openings; offset =
mouth − audio, positive: the mouth opens after the sound). Goal (issue 21): p95 of |offset|
≤ 45 ms.

Measured once Chromium's lip-sync has settled (`settle_s`: its playout skew within ±30 ms for
2 s; the first seconds after connecting, its audio jitter buffer starts far from the video's).
The WebM stamps video by the RTP timestamps and audio by its sample count, aligned once when
the recording starts: it shows any jump in the sender's video timestamps and every sample the
receiver inserts to conceal late audio for the rest of the file.

Beside it, Chromium's own view: `estimatedPlayoutTimestamp` of the audio minus that of the
video (getStats; both on the sender's clock through the RTCP sender reports), sampled while
the persona speaks: negative = the audio being heard left the server before the picture being
shown, i.e. the sound lags the picture.

    .venv/bin/python benchmarks/webrtc_av_sync.py               # 3 runs, writes webrtc_av_sync-cpu-<date>.json
    .venv/bin/python benchmarks/webrtc_av_sync.py --runs 1 --no-save
"""

from __future__ import annotations

import argparse
import asyncio
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
    sync_spec,
)


async def measure_runs(runs: int, text: str, folder: Path, jitter_ms: int = 0) -> dict:
    from playwright.async_api import async_playwright

    from comfyui_persona.video.voice.av_sync import measure, mouth_roi
    from server_harness import make_service, running

    service = await asyncio.to_thread(make_service)
    await asyncio.to_thread(service.warm_up)
    rows = []
    try:
        async with running(service) as server, async_playwright() as pw:
            browser = await pw.chromium.launch_persistent_context(
                str(folder / "profile"), executable_path=str(CHROMIUM), args=ARGS, headless=True)
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
                    stop = asyncio.Event()
                    sampler = asyncio.get_running_loop().create_task(sample_playout_skew(page, stop))
                    path = await record_speech_received(page, text, folder / f"received-{n}.webm")
                    stop.set()
                    skew = await sampler
                    report = await asyncio.to_thread(measure, path, roi)
                    rows.append({"onsets_audio": report.audio_onsets, "onsets_matched": len(report.offsets_ms),
                                 "offsets_ms": [round(v, 1) for v in report.offsets_ms],
                                 "frame_offsets_ms": [round(v, 1) for v in report.frame_offsets_ms],
                                 "playout_skew_ms": skew})
                    print(f"run {n}: {len(report.offsets_ms)}/{report.audio_onsets} onsets matched, offsets "
                          f"{np.round(report.offsets_ms).astype(int).tolist()} ms; Chromium's audio−video playout "
                          f"skew median {np.median(skew) if skew else float('nan'):.0f} ms", flush=True)
            finally:
                await browser.close()
    finally:
        service.pool.shutdown(wait=True)
    out = summarise(rows)
    out["settle_s"] = settled_s
    return out


def summarise(rows: list[dict]) -> dict:
    offsets = np.asarray([v for r in rows for v in r["offsets_ms"]])
    whole = np.asarray([v for r in rows for v in r["frame_offsets_ms"]])
    skew = np.asarray([v for r in rows for v in r["playout_skew_ms"]])
    audio = sum(r["onsets_audio"] for r in rows)
    out = {
        "onsets_audio": audio,
        "onsets_matched": int(offsets.size),
        "offset_ms_mean": float(offsets.mean()) if offsets.size else None,
        "offset_ms_p50": float(np.median(offsets)) if offsets.size else None,
        "abs_offset_ms_p95": float(np.percentile(np.abs(offsets), 95)) if offsets.size else None,
        "abs_offset_ms_p95_whole_frames": float(np.percentile(np.abs(whole), 95)) if whole.size else None,
        "playout_skew_ms_median": float(np.median(skew)) if skew.size else None,
        "playout_skew_ms_p05": float(np.percentile(skew, 5)) if skew.size else None,
        "playout_skew_ms_p95": float(np.percentile(skew, 95)) if skew.size else None,
        "goal_abs_offset_ms_p95": 45.0,
        "runs": rows,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    from comfyui_persona.video.voice.av_sync import SYNC_TEXT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="times the sync text is spoken (one page, one session)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--suffix", default="", help="appended to the result file's name")
    parser.add_argument("--jitter-ms", type=int, default=0,
                        help="the page's receiver jitterBufferTarget (?jitter=MS); 0: the browser's own")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"needs Chromium at {CHROMIUM} (scripts/setup.sh test)")
    with tempfile.TemporaryDirectory() as tmp:
        metrics = asyncio.run(measure_runs(args.runs, SYNC_TEXT, Path(tmp), args.jitter_ms))
    print(f"{metrics['onsets_matched']}/{metrics['onsets_audio']} onsets matched; offset mean "
          f"{metrics['offset_ms_mean']:.1f} ms, p95 |offset| {metrics['abs_offset_ms_p95']:.1f} ms (goal ≤ 45); "
          f"Chromium playout skew median {metrics['playout_skew_ms_median']:.0f} ms")
    if not args.no_save:
        config = {"runs": args.runs, "text": SYNC_TEXT, "size": "384x384", "fps": 24, "backend": "preview",
                  "browser": "Debian chromium, headless, MediaRecorder webm (VP8+Opus) of the remote stream",
                  "link": "loopback, no impairment", "persona": "server default",
                  "jitter_buffer_target_ms": args.jitter_ms or "browser default"}
        path = result_path("webrtc_av_sync", "cpu", args.suffix)
        write_result(path, "webrtc_av_sync", cpu_model(), config, metrics)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
