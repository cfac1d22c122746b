"""The identity conditioner: one reference photo in, everything the engine anchors on out.

From the persona's reference image (a file path or an RGB array; the card's
`appearance.reference_image` resolved to a file by the caller) it detects the largest
face and provides:

(a) a reference frame framed like a video frame, as the (1, 3, 1, H, W) tensor in
    [-1, 1] that the Wan VAE encoder takes; `reference_latents(vae, ...)` encodes it with
    `video.decoders.wan_vae.WanVAE.encode_reference`, giving the latent frame the LongLive
    engine can keep in its frame sink;
(b) the ArcFace embedding of the face, for the drift meter (`embedding`, `drift_meter()`);
(c) a text appearance description to keep at the start of every prompt
    (`appearance_prompt`, see `appearance.py`).

The face models are InsightFace buffalo_s by default: **non-commercial research only**
(see `models.LICENSE_NOTE`; pass another `FaceEmbedder` to use other ONNX files).
torch is imported only by `reference_video_tensor`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import PersonaError
from .appearance import MeasuredLook, describe_appearance, measure_look
from .drift import DriftMeter
from .embedder import EmbeddedFace, FaceEmbedder
from .frames import as_rgb_frames


class NoFaceInReferenceError(PersonaError, ValueError):
    """The reference image holds no face the detector can find."""


class ReferenceImageError(PersonaError, ValueError):
    """The reference image file is missing or cannot be read as an image."""


#: The formats a reference photo may be (Pillow names): only these parsers see the file.
#: Pillow knows dozens, and some (EPS) hand the file to Ghostscript; a card's image asset is
#: checked against the same list when the card loads (`persona.cards.reference`).
REFERENCE_FORMATS = ("PNG", "JPEG", "WEBP")


def load_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG or WebP file as (H, W, 3) uint8 RGB, honouring EXIF rotation (phone photos)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise ReferenceImageError(f"reference image {path} does not exist")
    try:
        with Image.open(path, formats=REFERENCE_FORMATS) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except UnidentifiedImageError:
        raise ReferenceImageError(f"cannot read {path} as a PNG, JPEG or WebP image") from None
    except OSError as error:
        raise ReferenceImageError(f"cannot read {path} as an image: {error}") from error


class IdentityConditioner:
    """Reference photo → reference frame/latents, face embedding and appearance text.

    `face_height` is the fraction of the frame height the face box fills in the
    reference frame, `face_centre_y` where the face centre sits (fraction from the top):
    the defaults (0.32, 0.42) give a head-and-shoulders framing like the preview
    renderer's close shots. When the photo is too tight for that framing the crop zooms
    in until it lies inside the photo, so the face may come out larger than asked.
    """

    def __init__(
        self,
        reference: str | os.PathLike | np.ndarray,
        embedder: FaceEmbedder,
        *,
        face_height: float = 0.32,
        face_centre_y: float = 0.42,
    ) -> None:
        if not 0.05 <= face_height <= 1.0:
            raise ValueError(f"face_height must be in [0.05, 1], got {face_height}")
        if not 0.0 <= face_centre_y <= 1.0:
            raise ValueError(f"face_centre_y must be in [0, 1], got {face_centre_y}")
        if isinstance(reference, (str, os.PathLike)):
            self.source = str(reference)
            image = load_rgb_image(reference)
        else:
            self.source = "<array>"
            (image,) = as_rgb_frames(reference)
        self.image = image
        self.embedder = embedder
        self.face_height = face_height
        self.face_centre_y = face_centre_y
        face = embedder.embed(image)
        if face is None:
            raise NoFaceInReferenceError(
                f"no face found in the reference image {self.source} ({image.shape[1]}×{image.shape[0]}); "
                "use a photo where the face is visible, frontal and at least ~40 px tall"
            )
        self.face: EmbeddedFace = face
        self.faces_found = len(embedder.detect(image))
        self.measured: MeasuredLook = measure_look(image, face.face.box, face.face.keypoints)

    @property
    def embedding(self) -> np.ndarray:
        """(512,) unit ArcFace embedding of the reference face."""
        return self.face.embedding

    @property
    def aligned_face(self) -> np.ndarray:
        """The 112×112 aligned crop the embedding was computed from (for UIs and logs)."""
        return self.face.aligned

    def drift_meter(self) -> DriftMeter:
        """A streaming drift meter against this reference, sharing the embedder."""
        return DriftMeter(self.embedding, self.embedder)

    def appearance_prompt(self, look: dict | None = None) -> str:
        """Text for the start of every prompt: the card's look plus what the photo shows.

        Idempotent: a look whose description already ends in what the photo adds (it was
        made by this method, e.g. by the identity node upstream) is returned as it is, so
        the engine can apply it again without repeating the colours.
        """
        look = look or {}
        added = describe_appearance({**look, "description": ""}, self.measured)
        description = str(look.get("description", "")).strip().rstrip(".")
        if added and description.endswith(added):
            return description
        return describe_appearance(look, self.measured)

    def reference_frame(self, width: int, height: int) -> np.ndarray:
        """The reference photo framed on the face at the engine's size: (height, width, 3) uint8."""
        import cv2

        if width < 16 or height < 16:
            raise ValueError(f"reference frame must be at least 16×16, got {width}×{height}")
        x1, y1, x2, y2 = self.face.face.box
        photo_h, photo_w = self.image.shape[:2]
        # Zoom in further if needed so the crop lies inside the photo: real pixels beat the
        # exact framing (repeated edge pixels smear into streaks the VAE would encode).
        scale = max(self.face_height * height / max(y2 - y1, 1.0), width / photo_w, height / photo_h)
        crop_w, crop_h = width / scale, height / scale
        left = float(np.clip((x1 + x2) / 2 - crop_w / 2, 0.0, photo_w - crop_w))
        top = float(np.clip((y1 + y2) / 2 - self.face_centre_y * crop_h, 0.0, photo_h - crop_h))
        matrix = np.array([[scale, 0.0, -scale * left], [0.0, scale, -scale * top]])
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        return cv2.warpAffine(
            self.image, matrix, (width, height), flags=interpolation, borderMode=cv2.BORDER_REPLICATE
        )

    def reference_video_tensor(self, width: int, height: int, device=None, dtype=None, frames: int = 1):
        """The reference frame as the VAE encoder's input: torch (1, 3, frames, H, W) in [-1, 1]
        (`frames` > 1: the same frame repeated, a still clip)."""
        import torch

        frame = torch.from_numpy(np.ascontiguousarray(self.reference_frame(width, height)))
        pixels = frame.permute(2, 0, 1).float().div(127.5).sub(1.0)  # (3, H, W) in [-1, 1]
        pixels = pixels[None, :, None].expand(-1, -1, frames, -1, -1)  # (1, 3, frames, H, W)
        return pixels.to(device=device, dtype=dtype or torch.float32).contiguous()

    def reference_latents(self, vae, width: int, height: int, frames: int = 1):
        """Encode the reference frame into Wan latents for the frame sink (the anchoring hook).

        `vae` is the engine's `WanVAE` (its `encode_reference(image, height, width)` gives
        normalised latents (1, 16, 1, height/8, width/8)), or any callable taking the
        (1, 3, T, H, W) pixel tensor in [-1, 1] from `reference_video_tensor`. The frame
        is framed on the face here first, so the VAE's own cover-crop changes nothing.

        `frames` > 1 latent frames: a still clip of 1 + 4·(frames − 1) copies of the frame is
        encoded, which gives latents shaped like a generated chunk of a motionless scene
        (the causal VAE codes the first frame alone and later ones in fours, so latent 0
        and latents 1.. differ). This is what the LongLive engine puts in its sink chunk.
        """
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        if frames == 1 and hasattr(vae, "encode_reference"):
            return vae.encode_reference(self.reference_frame(width, height), height, width)
        weight = getattr(getattr(vae, "conv2", None), "weight", None)
        clip = self.reference_video_tensor(
            width, height, device=weight.device if weight is not None else None, frames=1 + 4 * (frames - 1)
        )
        encode = vae.encode if hasattr(vae, "encode") else vae
        return encode(clip)
