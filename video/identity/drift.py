"""The identity drift meter: how far the face in a video wanders from the reference face.

Metrics (cosine of ArcFace embeddings, frame face vs reference face):
- `facesim_arc`: mean cosine over sampled frames that have a face ("FaceSim-Arc").
- `p05`: 5th percentile, the bad moments a mean hides.
- `slope_per_min`: least-squares slope of cosine against time, in cosine per minute;
  negative means the identity is drifting away as the session goes on.
- `no_face_fraction`: sampled frames where no face was detected. They are counted,
  not scored: a turned head or a cartoon face the detector misses is not a cosine of 0.

For orientation (ArcFace w600k_mbf on real photos, measured in tests/test_identity.py):
the same face under flip/rescale/crop scores ≈0.8–0.95, different people ≈0.0–0.25.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from .embedder import EmbeddedFace, FaceEmbedder


@dataclass(frozen=True)
class DriftSample:
    """One sampled frame: its time and cosine to the reference (None when no face)."""

    t: float  # seconds
    similarity: float | None
    face_score: float | None = None


@dataclass
class DriftReport:
    """Summary of a run of samples; `samples` keeps the curve for plotting."""

    frames: int
    frames_with_face: int
    no_face_fraction: float
    facesim_arc: float | None
    p05: float | None
    minimum: float | None
    slope_per_min: float | None
    duration_s: float
    samples: list[DriftSample] = field(default_factory=list)

    def to_dict(self, with_samples: bool = True) -> dict:
        data = asdict(self)
        if not with_samples:
            data.pop("samples")
        return data


def _slope_per_minute(times_s: np.ndarray, values: np.ndarray) -> float | None:
    """Least-squares slope of values over time, per minute; None with < 2 distinct times."""
    if len(times_s) < 2 or np.ptp(times_s) == 0:
        return None
    minutes = times_s / 60.0
    centred = minutes - minutes.mean()
    return float((centred * (values - values.mean())).sum() / (centred**2).sum())


def summarize(samples: list[DriftSample]) -> DriftReport:
    """Turn samples into the report (pure; used by both the meter and `measure_drift`)."""
    scored = [s for s in samples if s.similarity is not None]
    sims = np.array([s.similarity for s in scored], dtype=np.float64)
    times = np.array([s.t for s in scored], dtype=np.float64)
    duration = (max(s.t for s in samples) - min(s.t for s in samples)) if samples else 0.0
    return DriftReport(
        frames=len(samples),
        frames_with_face=len(scored),
        no_face_fraction=(1.0 - len(scored) / len(samples)) if samples else 0.0,
        facesim_arc=float(sims.mean()) if len(sims) else None,
        p05=float(np.percentile(sims, 5)) if len(sims) else None,
        minimum=float(sims.min()) if len(sims) else None,
        slope_per_min=_slope_per_minute(times, sims),
        duration_s=float(duration),
        samples=list(samples),
    )


class DriftMeter:
    """Streaming drift measurement: feed frames as they are made, read `report()` any time.

    The engine can call `update_batch(frames, times)` once per decoded chunk; every call
    embeds the largest face of each frame and compares it with the reference.
    """

    def __init__(self, reference_embedding: np.ndarray | None, embedder: FaceEmbedder) -> None:
        """`reference_embedding=None` adopts the first face seen as the reference (self-drift:
        how far the session wanders from its own start); that frame is not scored."""
        self.embedder = embedder
        self.samples: list[DriftSample] = []
        self.reference: np.ndarray | None = None
        if reference_embedding is not None:
            self.reference = self._normalise(reference_embedding)

    @staticmethod
    def _normalise(embedding: np.ndarray) -> np.ndarray:
        reference = np.asarray(embedding, dtype=np.float32).ravel()
        norm = float(np.linalg.norm(reference))
        if reference.size == 0 or not math.isfinite(norm) or norm == 0:
            raise ValueError("reference_embedding must be a non-zero, finite embedding (ArcFace: 512 values)")
        return reference / norm

    def update(self, frame, t: float) -> DriftSample | None:
        """Measure one RGB frame shown at `t` seconds (None: it became the self-drift reference)."""
        new = self.update_batch(frame, [t])
        return new[0] if new else None

    def update_batch(self, frames, times: Iterable[float]) -> list[DriftSample]:
        """Measure a batch of RGB frames (N, H, W, 3) shown at `times` seconds."""
        return self.update_faces(self.embedder.embed_batch(frames), times)

    def update_faces(self, faces: list[EmbeddedFace | None], times: Iterable[float]) -> list[DriftSample]:
        """Score faces already embedded (`FaceEmbedder.embed_batch`), so one embedding pass
        can feed several meters (e.g. against the reference photo and self-drift)."""
        times = [float(t) for t in times]
        if len(faces) != len(times):
            raise ValueError(f"got {len(faces)} frames but {len(times)} times")
        new = []
        for face, t in zip(faces, times, strict=True):
            if face is None:
                new.append(DriftSample(t=t, similarity=None))
                continue
            if self.reference is None:  # self-drift: the first face becomes the reference
                self.reference = self._normalise(face.embedding)
                continue
            if face.embedding.shape != self.reference.shape:
                raise ValueError(
                    f"reference embedding has {self.reference.size} values but the recogniser gives "
                    f"{face.embedding.size}: embed the reference with the same model"
                )
            similarity = float(face.embedding @ self.reference)
            new.append(DriftSample(t=t, similarity=similarity, face_score=face.face.score))
        self.samples.extend(new)
        return new

    def report(self) -> DriftReport:
        return summarize(self.samples)


def measure_drift(
    frames_with_times: Iterable[tuple[float, object]],
    reference_embedding: np.ndarray | None,
    embedder: FaceEmbedder,
) -> DriftReport:
    """Measure drift over `(t_seconds, rgb_frame)` pairs (e.g. from `sample_video`).

    `reference_embedding=None`: self-drift against the first face in the video.
    """
    meter = DriftMeter(reference_embedding, embedder)
    for t, frame in frames_with_times:
        meter.update(frame, t)
    return meter.report()


def plot_drift(report: DriftReport, path, title: str = "Identity drift (FaceSim-Arc)") -> None:
    """Write a PNG: cosine over time, no-face samples marked on the axis, mean and trend lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # the OO API: no pyplot global state, thread-safe

    fig = Figure(figsize=(8, 3.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    scored = [s for s in report.samples if s.similarity is not None]
    missing = [s.t for s in report.samples if s.similarity is None]
    if scored:
        ax.plot(
            [s.t for s in scored], [s.similarity for s in scored], ".-", lw=1, label="cosine to reference"
        )
    if missing:
        ax.plot(missing, [0.0] * len(missing), "x", color="tab:red", label=f"no face ({len(missing)})")
    if report.facesim_arc is not None:
        ax.axhline(
            report.facesim_arc, color="tab:green", ls="--", lw=1, label=f"mean {report.facesim_arc:.3f}"
        )
    if report.slope_per_min is not None and len(scored) >= 2:
        t = np.array([s.t for s in scored])
        y = np.array([s.similarity for s in scored])
        fit = y.mean() + report.slope_per_min * (t - t.mean()) / 60.0
        ax.plot(t, fit, color="tab:orange", lw=1, label=f"trend {report.slope_per_min:+.3f}/min")
    ax.set_ylim(-0.2, 1.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("cosine")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), format="png")
