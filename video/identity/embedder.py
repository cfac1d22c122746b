"""Detect, align and embed faces in RGB frames with SCRFD + ArcFace (ONNX Runtime, CPU by default).

`FaceEmbedder` is the one object every identity tool shares: the conditioner embeds
the reference photo with it, the drift meter embeds sampled frames, and the engine
can call `embed_batch` on decoded chunks to log drift while it generates. InsightFace's
model classes are used for loading and SCRFD box decoding (they route an ONNX file by
its outputs); alignment is ours (`align.py`). Default weights: InsightFace buffalo_s,
**non-commercial research only** (see `models.LICENSE_NOTE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .align import align_face
from .frames import as_rgb_frames
from .models import FaceModelPaths, IdentityDependencyError, resolve_model_paths


@dataclass(frozen=True)
class DetectedFace:
    """One face found by the detector, in the frame's pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    keypoints: np.ndarray  # (5, 2): left eye, right eye, nose, mouth left, mouth right

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class EmbeddedFace:
    """A detected face with its aligned 112×112 crop and unit-length ArcFace embedding."""

    face: DetectedFace
    aligned: np.ndarray  # (112, 112, 3) uint8 RGB
    embedding: np.ndarray  # (512,) float32, L2-normalised


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings (normalises both; safe for non-unit input)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class FaceEmbedder:
    """SCRFD face detector + ArcFace recogniser, loaded once from local ONNX files.

    Frames are RGB uint8, (H, W, 3) or (N, H, W, 3), numpy or torch (see `frames.py`).
    When a frame holds several faces the largest is taken: the persona is the subject
    of its own video. Nothing is ever downloaded; a missing file raises
    `FaceModelNotFoundError` naming it.
    """

    def __init__(
        self,
        detector: str | os.PathLike | None = None,
        recognizer: str | os.PathLike | None = None,
        *,
        det_size: int = 640,
        det_threshold: float = 0.5,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.paths: FaceModelPaths = resolve_model_paths(detector, recognizer)
        if det_size % 32 or det_size < 64:
            raise ValueError(f"det_size must be a multiple of 32 and at least 64, got {det_size}")
        if not 0.0 < det_threshold < 1.0:
            raise ValueError(f"det_threshold must be in (0, 1), got {det_threshold}")
        try:
            import onnxruntime
            from insightface.model_zoo import get_model
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise IdentityDependencyError(
                f"the identity tools need the `identity` extra (pip install 'comfyui-persona[identity]'): {error}"
            ) from error
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        # download=False is insightface's default; passing a file path never triggers a download.
        self._detector = get_model(str(self.paths.detector), providers=providers, sess_options=options)
        self._recognizer = get_model(str(self.paths.recognizer), providers=providers, sess_options=options)
        if type(self._detector).__name__ != "SCRFD":
            raise ValueError(f"{self.paths.detector} is not an SCRFD-style face detector (5 keypoints)")
        if not getattr(self._detector, "use_kps", False):
            raise ValueError(
                f"{self.paths.detector} predicts no keypoints; alignment needs the 5-point SCRFD"
            )
        if type(self._recognizer).__name__ != "ArcFaceONNX":
            raise ValueError(f"{self.paths.recognizer} is not an ArcFace-style recogniser (112×112 input)")
        self.det_size = det_size
        self.det_threshold = det_threshold
        self.aligned_size = int(self._recognizer.input_size[0])

    def detect(self, frame) -> list[DetectedFace]:
        """All faces in one RGB frame, largest first."""
        (image,) = as_rgb_frames(frame)
        bgr = np.ascontiguousarray(image[..., ::-1])  # InsightFace's preprocessing swaps BGR→RGB
        boxes, keypoints = self._detector.detect(
            bgr, input_size=(self.det_size, self.det_size), det_thresh=self.det_threshold
        )
        faces = [
            DetectedFace(
                box=tuple(float(v) for v in box[:4]), score=float(box[4]), keypoints=kps.astype(np.float32)
            )
            for box, kps in zip(boxes, keypoints, strict=True)
        ]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def embed_aligned(self, crops) -> np.ndarray:
        """Aligned RGB crops (N, 112, 112, 3) uint8 → (N, 512) unit-length embeddings."""
        batch = as_rgb_frames(crops)
        if batch.shape[1:3] != (self.aligned_size, self.aligned_size):
            raise ValueError(
                f"aligned crops must be {self.aligned_size}×{self.aligned_size}, got {batch.shape[1:3]}"
            )
        blob = batch.transpose(0, 3, 1, 2).astype(np.float32)
        features = np.concatenate([self._recognizer.forward(blob[i : i + 1]) for i in range(len(blob))])
        features /= np.linalg.norm(features, axis=1, keepdims=True) + 1e-12
        return features.astype(np.float32)

    def embed(self, frame) -> EmbeddedFace | None:
        """The largest face of one frame, aligned and embedded; None when there is no face."""
        return self.embed_batch(frame)[0]

    def embed_batch(self, frames) -> list[EmbeddedFace | None]:
        """One entry per frame: its largest face embedded, or None where no face was found."""
        batch = as_rgb_frames(frames)
        found: list[tuple[int, DetectedFace, np.ndarray]] = []
        for index, image in enumerate(batch):
            faces = self.detect(image)
            if faces:
                found.append((index, faces[0], align_face(image, faces[0].keypoints, self.aligned_size)))
        results: list[EmbeddedFace | None] = [None] * len(batch)
        if found:
            embeddings = self.embed_aligned(np.stack([crop for _, _, crop in found]))
            for (index, face, crop), embedding in zip(found, embeddings, strict=True):
                results[index] = EmbeddedFace(face=face, aligned=crop, embedding=embedding)
        return results
