"""Long-session identity test: run a renderer backend for minutes, log drift live, judge it.

    # any RendererBackend by import path; the preview runs anywhere (its cartoon face is
    # not detected by SCRFD, so expect a no-face failure there: it exercises the harness)
    .venv/bin/python benchmarks/identity_session.py --minutes 1 \
        --backend comfyui_persona.video.preview.renderer:PreviewRenderer --ref photo.jpg

    # the GPU engine with real weights (see docs/identity.md, "Long-session test plan")
    .venv/bin/python benchmarks/identity_session.py --minutes 6 --backend <module>:<Class> \
        --ref persona_face.jpg --width 832 --height 480 --mp4 /tmp/session.mp4

Every `--switch-s` seconds the next core action is submitted (a prompt switch and KV
re-cache on LongLive). Each chunk's frames are sampled at `--fps` and fed to a
`DriftMeter` twice: against the reference photo (FaceSim-Arc) and against the session's
own first face (self-drift). Writes benchmarks/results/identity_session-<device>-<date>.json,
a plot beside it, optionally the MP4; exits 1 when a threshold fails. Thresholds are in
`THRESHOLDS` and docs/identity.md. Face models: InsightFace buffalo_s, non-commercial
research only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from comfyui_persona.persona.schema import ActionDirective, core_vocabulary
from comfyui_persona.video.backend import SessionSpec
from comfyui_persona.video.identity import (
    DriftMeter,
    DriftReport,
    FaceEmbedder,
    IdentityConditioner,
    plot_drift,
)
from record import today, write_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

#: name → (metric, comparison, bound). See docs/identity.md for why these numbers.
THRESHOLDS = {
    "no_face_fraction": ("ref.no_face_fraction", "<=", 0.20),
    "self_slope_per_min": ("self.slope_per_min", ">=", -0.02),
    "self_last_minute_drop": ("self_last_minute_drop", "<=", 0.10),
    "self_p05": ("self.p05", ">=", 0.40),
    "ref_slope_per_min": ("ref.slope_per_min", ">=", -0.02),
}


def _load_backend(path: str, kwargs: dict):
    module_name, _, class_name = path.partition(":")
    if not class_name:
        raise SystemExit(f"--backend must be module:Class, got {path!r}")
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


def _minute_means(report: DriftReport) -> tuple[float | None, float | None]:
    scored = [(s.t, s.similarity) for s in report.samples if s.similarity is not None]
    if not scored:
        return None, None
    end = scored[-1][0]
    first = [v for t, v in scored if t < 60.0]
    last = [v for t, v in scored if t >= end - 60.0]
    return (float(np.mean(first)) if first else None, float(np.mean(last)) if last else None)


def _check(name: str, value, op: str, bound: float) -> tuple[bool, str]:
    if value is None:
        return False, f"FAIL {name}: not measured (no faces)"
    ok = value <= bound if op == "<=" else value >= bound
    return ok, f"{'PASS' if ok else 'FAIL'} {name}: {value:+.4f} {op} {bound:+.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="comfyui_persona.video.preview.renderer:PreviewRenderer")
    parser.add_argument(
        "--backend-kwargs", default="{}", help="JSON object passed to the backend's constructor"
    )
    parser.add_argument("--ref", required=True, help="the persona's reference face photo")
    parser.add_argument("--description", default="a friendly young adult", help="card appearance description")
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--video-fps", type=float, default=16.0)
    parser.add_argument("--fps", type=float, default=2.0, help="drift samples per second of video")
    parser.add_argument("--switch-s", type=float, default=8.0, help="seconds between directives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mp4", help="also record the session here")
    parser.add_argument(
        "--plain-appearance",
        action="store_true",
        help="baseline: prompt with --description only, not the conditioner's appearance text",
    )
    parser.add_argument("--device-name", default="cpu", help="for the result file name (h100, cpu...)")
    args = parser.parse_args()

    embedder = FaceEmbedder(threads=2)
    conditioner = IdentityConditioner(args.ref, embedder)
    look = {"description": args.description, "reference_image": str(Path(args.ref).resolve())}
    appearance = args.description if args.plain_appearance else conditioner.appearance_prompt(look)
    backend = _load_backend(args.backend, json.loads(args.backend_kwargs))
    spec = SessionSpec(
        persona_id="identity-test",
        persona_name="Test",
        look={**look, "description": appearance},
        width=args.width,
        height=args.height,
        fps=args.video_fps,
        seed=args.seed,
        vocabulary={"actions": [], "expressions": []},
    )
    backend.start_session(spec)
    actions = [a.name for a in core_vocabulary().actions if a.name not in ("walk",)]
    ref_meter, self_meter = conditioner.drift_meter(), DriftMeter(None, embedder)

    writer = None
    if args.mp4:
        import av

        writer = av.open(args.mp4, "w")
        stream = writer.add_stream("libx264", rate=round(args.video_fps))
        stream.width, stream.height, stream.pix_fmt = args.width, args.height, "yuv420p"

    total_s, next_switch, next_sample, seq = args.minutes * 60.0, 0.0, 0.0, 0
    render_s = meter_s = 0.0
    t = 0.0
    while t < total_s:
        if t >= next_switch:
            action = actions[seq % len(actions)]
            backend.submit([ActionDirective(action=action, expression="smile", intensity=0.6)], seq=seq)
            seq += 1
            next_switch += args.switch_s
        start = time.perf_counter()
        chunk = backend.next_chunk()
        render_s += time.perf_counter() - start
        times = [ms / 1000.0 for ms in chunk.pts_ms]
        picked = []
        for i, ts in enumerate(times):
            if ts + 1e-6 >= next_sample:
                picked.append(i)
                next_sample += 1.0 / args.fps
        start = time.perf_counter()
        if picked:
            faces = embedder.embed_batch(chunk.frames[picked])  # once, for both meters
            ref_meter.update_faces(faces, [times[i] for i in picked])
            self_meter.update_faces(faces, [times[i] for i in picked])
        meter_s += time.perf_counter() - start
        if writer is not None:
            for frame in chunk.frames:
                writer.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        t = times[-1]
    if writer is not None:
        writer.mux(stream.encode())
        writer.close()

    ref, own = ref_meter.report(), self_meter.report()
    first, last = _minute_means(own)
    values = {
        "ref.no_face_fraction": ref.no_face_fraction,
        "self.slope_per_min": own.slope_per_min,
        "self_last_minute_drop": None if first is None or last is None else first - last,
        "self.p05": own.p05,
        "ref.slope_per_min": ref.slope_per_min,
    }
    verdicts = [_check(name, values[key], op, bound) for name, (key, op, bound) in THRESHOLDS.items()]
    for _, line in verdicts:
        print(line)
    torch_version = sys.modules["torch"].__version__ if "torch" in sys.modules else None
    result = {
        "benchmark": "identity_session",
        "device": args.device_name,
        "torch": torch_version,
        "config": {
            "backend": args.backend,
            "reference": str(args.ref),
            "appearance_prompt": appearance,
            "minutes": args.minutes,
            "size": [args.width, args.height],
            "video_fps": args.video_fps,
            "sample_fps": args.fps,
            "switch_s": args.switch_s,
            "thresholds": THRESHOLDS,
        },
        "metrics": {
            "facesim_arc": ref.facesim_arc,
            "facesim_arc_p05": ref.p05,
            "ref_slope_per_min": ref.slope_per_min,
            "no_face_fraction": ref.no_face_fraction,
            "self_facesim_arc": own.facesim_arc,
            "self_p05": own.p05,
            "self_slope_per_min": own.slope_per_min,
            "self_first_minute_mean": first,
            "self_last_minute_mean": last,
            "samples": ref.frames,
            "render_s_per_video_s": render_s / max(t, 1e-9),
            "meter_ms_per_sample": 1000 * meter_s / max(ref.frames, 1),
            "passed": all(ok for ok, _ in verdicts),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"identity_session-{args.device_name}-{today()}.json"
    result = write_result(out, **result)
    plot_drift(ref, out.with_suffix(".png"), title=f"FaceSim-Arc vs reference, {args.backend}")
    plot_drift(own, out.with_name(out.stem + "-self.png"), title="Self-drift vs the session's first face")
    print(json.dumps(result["metrics"], indent=2))
    print(f"wrote {out}")
    return 0 if result["metrics"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
