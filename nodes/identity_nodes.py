"""Identity conditioner node: a reference photo (ComfyUI IMAGE) → the persona's measured look.

The face models (SCRFD + ArcFace ONNX, the `identity` extra) load once per process. The
node's output feeds the prompt composer (or the LongLive sampler directly): its appearance
text starts every LongLive prompt, and the sampler anchors the session on the photo (the
framed reference, VAE-encoded, is the KV sink every chunk attends to). Its aligned-face
output shows what the embedder saw.
"""

from __future__ import annotations

import threading
from typing import Any

from .engine_types import IDENTITY, IdentityValue
from .types import PERSONA

_EMBEDDER: list[Any] = []
_EMBEDDER_LOCK = threading.Lock()


def _embedder():
    with _EMBEDDER_LOCK:
        if not _EMBEDDER:
            from ..video.identity import FaceEmbedder

            _EMBEDDER.append(FaceEmbedder())
        return _EMBEDDER[0]


def image_to_rgb(image) -> Any:
    """First image of a ComfyUI IMAGE batch (B×H×W×C float 0..1) as H×W×3 uint8."""
    import numpy as np

    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.ndim == 4:
        array = array[0]
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"reference must be an RGB image (H×W×3); got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        array = (np.clip(array[..., :3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


class PersonaIdentityConditioner:
    """Measures the persona's look on a reference photo, for every LongLive prompt."""

    DESCRIPTION = (
        "Identity conditioner: finds the face in a reference photo (SCRFD), embeds it (ArcFace) and describes "
        "the look it shows; connect it to the prompt composer (or the LongLive sampler) so every LongLive "
        "prompt starts with it and the stream is anchored on the photo (its latents fill the KV sink). "
        "Default face models: InsightFace buffalo_s, non-commercial research only."
    )
    CATEGORY = "persona/identity"
    RETURN_TYPES = (IDENTITY, "STRING", "IMAGE")
    RETURN_NAMES = ("identity", "appearance", "aligned_face")
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "reference": ("IMAGE", {"tooltip": "A photo of the persona's face (e.g. from Load Image)."}),
                "persona": (PERSONA, {"tooltip": "The card whose look the photo refines."}),
            }
        }

    def condition(self, reference, persona) -> tuple:
        import numpy as np

        from ..video.identity import IdentityConditioner

        conditioner = IdentityConditioner(image_to_rgb(reference), _embedder())
        appearance = conditioner.appearance_prompt(persona.appearance.model_dump(mode="json"))
        value = IdentityValue(appearance=appearance, embedding=np.asarray(conditioner.embedding),
                              faces_found=conditioner.faces_found, conditioner=conditioner)
        aligned = _as_image(conditioner.aligned_face)
        return (value, appearance, aligned)


def _as_image(rgb) -> Any:
    import torch

    return torch.from_numpy(rgb.copy()).to(torch.float32).div_(255.0)[None]
