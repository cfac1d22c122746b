"""Identity conditioner node: a reference photo (ComfyUI IMAGE) → the persona's measured look.

The face models (SCRFD + ArcFace ONNX, the `identity` extra) load once per process. The
node's output feeds the prompt composer (or the LongLive sampler directly): its appearance
text starts every LongLive prompt, and the sampler anchors the session on the photo (the
framed reference, VAE-encoded, is the KV sink every chunk attends to). Its aligned-face
output shows what the embedder saw.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from .engine_types import IDENTITY, IdentityValue
from .types import PERSONA

_EMBEDDERS: dict[tuple, Any] = {}
_EMBEDDER_LOCK = threading.Lock()
#: ComfyUI's model folder for face models (models/insightface, as face packs name it).
FACE_FOLDER = "insightface"


def _embedder(detector: str | None = None, recognizer: str | None = None):
    """One FaceEmbedder per (detector, recognizer) file pair (None: the packaged defaults)."""
    with _EMBEDDER_LOCK:
        key = (detector, recognizer)
        if key not in _EMBEDDERS:
            from ..video.identity import FaceEmbedder

            _EMBEDDERS[key] = FaceEmbedder(detector, recognizer)
        return _EMBEDDERS[key]


def face_model_choices() -> list[str]:
    """"auto" then the ONNX files in ComfyUI's models/insightface (registered if no pack did)."""
    from .comfy_env import register_models_folder
    from .engine_nodes import AUTO_FILE, file_choices

    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is not None and FACE_FOLDER not in getattr(folder_paths, "folder_names_and_paths", {}):
        register_models_folder(FACE_FOLDER)
    return [AUTO_FILE, *(name for name in file_choices(FACE_FOLDER)[1:] if name.lower().endswith(".onnx"))]


def face_model_path(choice: str) -> str | None:
    """The full path of a picked face model, or None for "auto" (the packaged default)."""
    from .engine_nodes import AUTO_FILE

    if not choice or choice == AUTO_FILE:
        return None
    folder_paths = sys.modules.get("folder_paths")
    full = folder_paths.get_full_path(FACE_FOLDER, choice) if folder_paths is not None else None
    return full or choice


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
            },
            "optional": {
                "detector": (face_model_choices(), {"default": "auto", "tooltip": "SCRFD face detector ONNX from "
                             "ComfyUI's models/insightface; auto = the packaged buffalo_s file (non-commercial)."}),
                "recognizer": (face_model_choices(), {"default": "auto", "tooltip": "ArcFace recogniser ONNX from "
                               "ComfyUI's models/insightface; auto = the packaged buffalo_s file (non-commercial)."}),
            },
        }

    def condition(self, reference, persona, detector: str = "auto", recognizer: str = "auto") -> tuple:
        import numpy as np

        from ..video.identity import IdentityConditioner

        embedder = _embedder(face_model_path(detector), face_model_path(recognizer))
        conditioner = IdentityConditioner(image_to_rgb(reference), embedder)
        appearance = conditioner.appearance_prompt(persona.appearance.model_dump(mode="json"))
        value = IdentityValue(appearance=appearance, embedding=np.asarray(conditioner.embedding),
                              faces_found=conditioner.faces_found, conditioner=conditioner)
        aligned = _as_image(conditioner.aligned_face)
        return (value, appearance, aligned)


def _as_image(rgb) -> Any:
    import torch

    return torch.from_numpy(rgb.copy()).to(torch.float32).div_(255.0)[None]
