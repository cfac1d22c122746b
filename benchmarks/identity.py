"""Identity tools on CPU: what the drift meter costs, how well it separates people, and
whether it sees the preview renderer's cartoon face.

    .venv/bin/python benchmarks/identity.py              # writes benchmarks/results/identity-cpu-<date>.json

Metrics:
- `embed_frame_ms_p50` / `_p95`: one 512×512 frame, detect (SCRFD-500M at det_size) + align +
  ArcFace embed, after 3 warm-up frames; `embed_aligned_ms_p50`: ArcFace alone on one crop.
- `same_min` / `different_max`: cosine, same person under flip / 0.6× rescale / crop vs the
  original (the six people of InsightFace's t1.jpg), and different people (t1's six with each
  other and with the first face of yaoming.jpg, gdp.jpg, players.jpg).
- `preview_no_face_fraction`: 60 s of the CPU preview renderer (512×512, 16 fps, every core
  action in turn), sampled at 2 fps: the fraction where SCRFD finds no face.
- `distortion_*`: a face photo distorted more every frame (tests/test_identity_drift.py's
  recipe, 24 s): mean cosine in the first and last 4 s with a face, slope per minute.
Default face weights: InsightFace buffalo_s, non-commercial research only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from comfyui_persona.video.identity import (
    FaceEmbedder,
    IdentityConditioner,
    cosine,
    load_rgb_image,
    measure_drift,
)
from comfyui_persona.video.identity.align import align_face
from comfyui_persona.video.identity.models import default_model_dir
from record import cpu_model, today, write_result

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _insightface_images() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images"


def latency(embedder: FaceEmbedder, frame: np.ndarray, runs: int) -> dict:
    for _ in range(3):
        embedder.embed(frame)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        embedder.embed(frame)
        times.append((time.perf_counter() - start) * 1000)
    crop = embedder.embed(frame).aligned
    crop_times = []
    for _ in range(runs):
        start = time.perf_counter()
        embedder.embed_aligned(crop)
        crop_times.append((time.perf_counter() - start) * 1000)
    return {
        "embed_frame_ms_p50": round(statistics.median(times), 2),
        "embed_frame_ms_p95": round(float(np.percentile(times, 95)), 2),
        "embed_aligned_ms_p50": round(statistics.median(crop_times), 2),
    }


def _nearest(embedder: FaceEmbedder, image: np.ndarray, centre) -> np.ndarray:
    faces = embedder.detect(image)
    face = min(
        faces,
        key=lambda f: np.hypot((f.box[0] + f.box[2]) / 2 - centre[0], (f.box[1] + f.box[3]) / 2 - centre[1]),
    )
    return embedder.embed_aligned(align_face(image, face.keypoints))[0]


def separation(embedder: FaceEmbedder) -> dict:
    t1 = load_rgb_image(_insightface_images() / "t1.jpg")
    height, width = t1.shape[:2]
    faces = embedder.detect(t1)
    refs = [embedder.embed_aligned(align_face(t1, f.keypoints))[0] for f in faces]
    flipped = np.ascontiguousarray(t1[:, ::-1])
    small = cv2.resize(t1, (width * 6 // 10, height * 6 // 10), interpolation=cv2.INTER_AREA)
    same = []
    for face, ref in zip(faces, refs, strict=True):
        x1, y1, x2, y2 = (int(v) for v in face.box)
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        same.append(
            cosine(embedder.embed(t1[max(0, y1 - h) : y2 + h, max(0, x1 - w) : x2 + w]).embedding, ref)
        )
        same.append(cosine(_nearest(embedder, flipped, (width - cx, cy)), ref))
        same.append(cosine(_nearest(embedder, small, (0.6 * cx, 0.6 * cy)), ref))
    others = [
        next(
            f for f in embedder.embed_batch(load_rgb_image(default_model_dir() / n)) if f is not None
        ).embedding
        for n in ("yaoming.jpg", "gdp.jpg", "players.jpg")
    ]
    different = [cosine(refs[i], refs[j]) for i in range(len(refs)) for j in range(i + 1, len(refs))]
    different += [cosine(r, o) for r in refs for o in others]
    return {
        "faces_in_t1": len(faces),
        "same_pairs": len(same),
        "same_min": round(min(same), 4),
        "same_mean": round(float(np.mean(same)), 4),
        "different_pairs": len(different),
        "different_max": round(max(different), 4),
        "different_mean": round(float(np.mean(different)), 4),
    }


def preview_detection(embedder: FaceEmbedder, seconds: float = 60.0) -> dict:
    from comfyui_persona.persona.schema import CORE_ACTIONS, ActionDirective
    from comfyui_persona.video.backend import SessionSpec
    from comfyui_persona.video.preview.renderer import PreviewRenderer

    renderer = PreviewRenderer(chunk_frames=16)
    renderer.start_session(SessionSpec(persona_id="ada", persona_name="Ada", look={}, width=512, height=512))
    actions = [a.name for a in CORE_ACTIONS if a.name not in ("sit", "stand", "walk")]
    found, sampled, scores = 0, 0, []
    for second in range(int(seconds)):
        if second % 3 == 0:
            name = actions[(second // 3) % len(actions)]
            renderer.submit([ActionDirective(action=name, expression="smile", intensity=0.7)], seq=second)
        chunk = renderer.next_chunk()  # 16 frames = 1 s
        for frame in chunk.frames[::8]:  # 2 fps
            sampled += 1
            faces = embedder.detect(frame)
            if faces:
                found += 1
                scores.append(faces[0].score)
    return {
        "preview_frames_sampled": sampled,
        "preview_no_face_fraction": round(1 - found / sampled, 4),
        "preview_face_score_median": round(float(np.median(scores)), 3) if scores else None,
    }


def distortion(embedder: FaceEmbedder) -> dict:
    rng = np.random.default_rng(0)
    ref = IdentityConditioner(default_model_dir() / "yaoming.jpg", embedder)
    base = ref.reference_frame(224, 224)
    frames = []
    for i in range(4 * 24):
        level = i / 96
        yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
        out = cv2.remap(
            base,
            xx + 6 * level * np.sin(yy / 12),
            yy + 6 * level * np.cos(xx / 15),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        if level:
            out = cv2.GaussianBlur(out, (0, 0), 0.01 + 2.5 * level)
        frames.append((i / 4, np.clip(out + rng.normal(0, 25 * level, out.shape), 0, 255).astype(np.uint8)))
    report = measure_drift(frames[::2], ref.embedding, embedder)
    scored = [s for s in report.samples if s.similarity is not None]
    return {
        "distortion_first4s_mean": round(float(np.mean([s.similarity for s in scored if s.t < 4])), 4),
        "distortion_last4s_mean": round(float(np.mean([s.similarity for s in scored if s.t >= 20])), 4),
        "distortion_slope_per_min": round(report.slope_per_min, 4),
        "distortion_no_face_fraction": round(report.no_face_fraction, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--det-size", type=int, default=640)
    args = parser.parse_args()
    import onnxruntime

    embedder = FaceEmbedder(det_size=args.det_size, threads=args.threads)
    probe = IdentityConditioner(default_model_dir() / "yaoming.jpg", embedder).reference_frame(512, 512)
    metrics = {}
    metrics.update(latency(embedder, probe, args.runs))
    metrics.update(separation(embedder))
    metrics.update(preview_detection(embedder))
    metrics.update(distortion(embedder))
    result = {
        "benchmark": "identity",
        "device": f"cpu ({cpu_model()}, {args.threads} threads)",
        "torch": None,
        "config": {
            "detector": embedder.paths.detector.name,
            "recognizer": embedder.paths.recognizer.name,
            "det_size": args.det_size,
            "threads": args.threads,
            "runs": args.runs,
            "onnxruntime": onnxruntime.__version__,
        },
        "metrics": metrics,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"identity-cpu-{today()}.json"
    result = write_result(out, **result)
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
