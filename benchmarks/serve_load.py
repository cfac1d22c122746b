"""Load test of `persona serve`: N concurrent sessions on loopback with the preview backend.

Starts the real server in a subprocess (`persona serve --port 0`), connects N sessions
with a plain `websockets` client, and for `--duration` seconds has each one send a
quick action every `--action-every` seconds (alternating with a chat message) while it
receives the stream. Reports per-session fps (frames received / time), the server's
directive-to-frame latency (PROTOCOL.md `metrics.latency_ms`, one sample per directive)
p50/p95, and the server's RSS sampled every few seconds with its linear trend.

    .venv/bin/python benchmarks/serve_load.py --sessions 4 --duration 60
    .venv/bin/python benchmarks/serve_load.py --sessions 4 --duration 300 --tag memory

Targets on the 2-core dev machine: 4 sessions at >= 20 fps each, p95 <= 150 ms, no RSS
growth trend. `--encoders` also times the JPEG libraries on rendered frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import websockets

from record import cpu_model, today, torch_version, write_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ACTIONS = [("wave", "smile"), ("nod", "neutral"), ("sit", "neutral"), ("stand", "neutral"), ("clap", "excited"),
           ("bow", "smile"), ("shrug", "confused"), ("think", "thoughtful")]
DIALOGUE = "Sure, here you go! I hope you like it."
CHATS = ["please wave", "can you nod?", "dance for me", "sit down please", "stand up", "look around"]


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024.0


def _slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per minute."""
    if len(samples) < 3:
        return 0.0
    xs = [t for t, _ in samples]
    ys = [v for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=False)) / den if den else 0.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[k]


async def _session(url: str, index: int, duration: float, warm: float, action_every: float, out: dict,
                   speech: bool = True) -> None:
    frames = 0
    counted_from = None
    latencies: list[float] = []
    last_latency = None
    errors: list[str] = []
    audio_packets = 0
    async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_action = start + warm + 0.37 * index  # stagger the sessions
        n = 0
        while True:
            now = loop.time()
            if now - start >= duration:
                break
            if counted_from is None and now - start >= warm:
                counted_from, frames = now, 0
            if now >= next_action:
                if n % 2 == 0:
                    action, expression = ACTIONS[(n // 2 + index) % len(ACTIONS)]
                    message = {"type": "action", "id": f"s{index}-{n}",
                               "directive": {"action": action, "expression": expression, "intensity": 0.7}}
                    if speech:  # a spoken line too: with chat replies, speech most of the time
                        message["directive"]["dialogue"] = DIALOGUE
                else:
                    message = {"type": "chat", "id": f"s{index}-{n}", "text": CHATS[(n // 2 + index) % len(CHATS)]}
                await ws.send(json.dumps(message))
                n += 1
                next_action += action_every
            try:
                data = await asyncio.wait_for(ws.recv(), timeout=max(0.01, min(next_action, start + duration) - loop.time()))
            except asyncio.TimeoutError:
                continue
            if isinstance(data, bytes):
                if data[0] == 1:  # kind 1: a video frame (kind 2 is speech audio)
                    frames += 1
                elif counted_from is not None:
                    audio_packets += 1
                continue
            message = json.loads(data)
            if message["type"] == "metrics" and counted_from is not None:
                value = message["latency_ms"]
                if value is not None and value != last_latency:
                    latencies.append(value)
                last_latency = value
            elif message["type"] == "error":
                errors.append(message["code"])
        elapsed = loop.time() - (counted_from or start)
    out[index] = {"fps": frames / elapsed if elapsed > 0 else 0.0, "latencies_ms": latencies, "errors": errors,
                  "directives_sent": n, "audio_s": audio_packets * 0.1}


async def _sample_rss(pid: int, duration: float, every: float, samples: list) -> None:
    began = time.monotonic()
    while time.monotonic() - began < duration:
        samples.append((time.monotonic() - began, _rss_mib(pid)))
        await asyncio.sleep(every)


def _time_encoders() -> dict:
    sys.path.insert(0, str(REPO.parent))
    from comfyui_persona.headless.server.encoder import ENCODERS, EncoderUnavailableError, make_encoder
    from comfyui_persona.persona.library import load_persona
    from comfyui_persona.video.backend import SessionSpec
    from comfyui_persona.video.registry import create_backend

    persona = load_persona("mira")
    backend = create_backend("preview")
    backend.start_session(SessionSpec(persona_id=persona.id, persona_name=persona.name,
                                      look=persona.appearance.model_dump(mode="json"), width=384, height=384, fps=24.0))
    frames = [f for _ in range(6) for f in backend.next_chunk().frames]
    timings = {}
    for name in ENCODERS:
        try:
            encode = make_encoder(name)
        except EncoderUnavailableError as exc:
            timings[name] = f"unavailable: {exc}"
            continue
        reps = []
        for _ in range(7):
            began = time.perf_counter()
            for frame in frames:
                encode(frame, 80)
            reps.append((time.perf_counter() - began) / len(frames) * 1000)
        timings[name] = {"encode_ms_p50": round(statistics.median(reps), 3)}
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of streaming per session")
    parser.add_argument("--warm", type=float, default=5.0, help="seconds ignored at the start")
    parser.add_argument("--action-every", type=float, default=2.0, help="seconds between directives per session")
    parser.add_argument("--rss-every", type=float, default=5.0)
    parser.add_argument("--encoders", action="store_true", help="also time the JPEG libraries")
    parser.add_argument("--tag", default="", help="suffix for the result file name")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--no-speech", action="store_true", help="serve with --no-speech (no audio, no lip-sync)")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 64 or not 5 <= args.duration <= 3600:
        parser.error("--sessions must be 1..64 and --duration 5..3600 s")

    command = [sys.executable, "-m", "comfyui_persona.headless", "serve", "--port", "0", "--quiet",
               "--max-sessions", str(args.sessions), "--rate", "50"] + (["--no-speech"] if args.no_speech else [])
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        line = server.stdout.readline()
        match = re.search(r"ws://([\d.]+):(\d+)/persona/ws", line)
        if not match:
            raise SystemExit(f"server did not start: {line!r}")
        url = f"ws://{match.group(1)}:{match.group(2)}/persona/ws"
        rss_start = _rss_mib(server.pid)
        results: dict = {}
        rss: list = []

        async def run() -> None:
            await asyncio.gather(
                _sample_rss(server.pid, args.duration, args.rss_every, rss),
                *[_session(url, i, args.duration, args.warm, args.action_every, results, not args.no_speech)
                  for i in range(args.sessions)],
            )

        load_before = os.getloadavg()
        asyncio.run(run())
        load_after = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=30)

    fps = [results[i]["fps"] for i in sorted(results)]
    latencies = [v for i in results for v in results[i]["latencies_ms"]]
    # Start-up growth (first sessions, first turns, allocator warm-up) is not a trend: fit after it.
    steady_from = max(args.warm + 10, min(60.0, args.duration / 3))
    steady = [s for s in rss if s[0] >= steady_from] or rss
    metrics = {
        "fps_per_session": [round(v, 2) for v in fps],
        "fps_min": round(min(fps), 2),
        "fps_median": round(statistics.median(fps), 2),
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p95": _percentile(latencies, 95),
        "latency_samples": len(latencies),
        "latency_ms_max": max(latencies) if latencies else None,
        "rss_mib_start": round(rss_start, 1),
        "rss_mib_end": round(rss[-1][1], 1) if rss else None,
        "rss_mib_max": round(max(v for _, v in rss), 1) if rss else None,
        "rss_trend_mib_per_min": round(_slope_per_min(steady), 3),
        "rss_trend_fit_from_s": steady_from,
        "rss_samples": [(round(t, 1), round(v, 1)) for t, v in rss],
        "speech_audio_s_per_session": [round(results[i]["audio_s"], 1) for i in sorted(results)],
        "errors": sorted({code for i in results for code in results[i]["errors"]}),
        "load_avg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    if args.encoders:
        metrics["jpeg_encoders_384px"] = _time_encoders()
    record = {
        "benchmark": "serve_load",
        "device": cpu_model(),
        "torch": torch_version(),
        "config": {"sessions": args.sessions, "duration_s": args.duration, "warm_s": args.warm,
                   "action_every_s": args.action_every, "backend": "preview", "size": "384x384", "fps_target": 24,
                   "cpus": os.cpu_count(), "workflow": "workflows/persona_preview_chat.json",
                   "speech": not args.no_speech},
        "metrics": metrics,
    }
    print(json.dumps({k: v for k, v in metrics.items() if k != "rss_samples"}, indent=2))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        suffix = f"-{args.tag}" if args.tag else ""
        path = RESULTS / f"serve_load-cpu-{today()}{suffix}.json"
        record = write_result(path, **record)
        print(f"saved {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
