"""What a user may set on the lip-sync stage: one pydantic model drives validation and UI.

Every field has bounds, a description and `json_schema_extra={"ui": {"order", "is_load_param"}}`
(STYLE.md house rule 12); load-time fields need a new stage, the others apply on the next chunk.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LipSyncSettings"]


def _ui(order: int, *, load: bool, **extra: Any) -> dict[str, Any]:
    return {"ui": {"order": order, "is_load_param": load, **extra}}


class LipSyncSettings(BaseModel):
    """The lip-sync stage's settings (MuseTalk 1.5 on frames already made)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True, description="Re-draw the mouth to match the speech; off: frames pass through untouched.",
        json_schema_extra=_ui(0, load=False),
    )
    detect_every: int = Field(
        3, ge=1, le=16,
        description="Run the face detector on every n-th frame (and each chunk's last); boxes in between are "
        "interpolated and smoothed.",
        json_schema_extra=_ui(1, load=False),
    )
    det_size: int = Field(
        320, ge=128, le=1024, multiple_of=32,
        description="Square input size of the SCRFD face detector (smaller: faster, misses small faces).",
        json_schema_extra=_ui(2, load=True),
    )
    det_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="Face detector score threshold.", json_schema_extra=_ui(3, load=True),
    )
    smoothing_min_cutoff_hz: float = Field(
        1.5, gt=0.0, le=30.0,
        description="One-Euro smoothing of the face box: cutoff when the head is still (lower: steadier).",
        json_schema_extra=_ui(4, load=False),
    )
    smoothing_beta: float = Field(
        0.02, ge=0.0, le=1.0,
        description="One-Euro smoothing: how fast the cutoff rises with head speed (higher: less lag).",
        json_schema_extra=_ui(5, load=False),
    )
    chin_margin: float = Field(
        0.04, ge=0.0, le=0.2,
        description="Room below the chin in the face crop, as a fraction of its height (MuseTalk 1.5's margin).",
        json_schema_extra=_ui(6, load=False),
    )
    dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="Compute dtype on a GPU (MuseTalk runs float16); float32 on a CPU always.",
        json_schema_extra=_ui(7, load=True, component="select"),
    )
    max_batch: int = Field(
        16, ge=1, le=64, description="Frames per UNet batch (a chunk of 12 is one batch).",
        json_schema_extra=_ui(8, load=False),
    )
    reference: Literal["frame", "chunk"] = Field(
        "frame",
        description="Reference face the UNet copies looks from: each frame itself (MuseTalk's inference), or the "
        "chunk's first speaking frame for the whole chunk (one VAE encode per chunk instead of one per frame).",
        json_schema_extra=_ui(10, load=False, component="select"),
    )
    autoencoder: Literal["sd-vae", "taesd"] = Field(
        "sd-vae",
        description="Image autoencoder around the UNet: sd-vae (MuseTalk's own, exact) or taesd (TAESD, distilled to "
        "the same latents: much less GPU work per frame, a less exact picture; needs musetalk/taesd/).",
        json_schema_extra=_ui(11, load=True, component="select"),
    )
    detector_threads: int = Field(
        2, ge=1, le=32, description="CPU threads of the face detector (ONNX Runtime).",
        json_schema_extra=_ui(9, load=True),
    )
