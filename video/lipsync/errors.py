"""Errors of the lip-sync stage a caller can cause (all under `PersonaError`)."""

from __future__ import annotations

from ...errors import PersonaError

__all__ = ["FaceModelMismatchError", "LipSyncDependencyError", "LipSyncInputError"]


class LipSyncInputError(PersonaError, ValueError):
    """Frames, timestamps or audio handed to the lip-sync stage are not usable as given."""

    code = "lipsync_input"


class LipSyncDependencyError(PersonaError, ImportError):
    """A package the lip-sync stage needs (the `longlive` or `identity` extra) is not installed."""

    code = "lipsync_dependency"


class FaceModelMismatchError(PersonaError, ValueError):
    """A face model file is not the kind of model asked for (SCRFD with keypoints, 106 landmarks)."""

    code = "face_model_mismatch"
