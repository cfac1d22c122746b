"""Cutting face crops out of frames and putting re-drawn mouths back, touching nothing else.

The UNet re-draws the crop's lower half. Only a feathered ellipse around the mouth and
jaw of that half goes back into the frame (`mouth_mask`): weight 1 in its middle, easing to
exactly 0 at its rim, so colour differences of the autoencoder's reconstruction fade out
instead of showing a seam. MuseTalk 1.5 shapes its blend with a face-parsing network
(BiSeNet, weights on a file host outside any package registry); a geometric ellipse needs no
weights and keeps the blend's reach known exactly: `mouth_region` is the box of frame pixels
it can touch, and every pixel outside it is returned bit for bit (the tests check this).

Blending is `frame + w · (generated − frame)` in float32, rounded: where w is 0 the frame's
value comes back exactly. OpenCV does the affine warps (bilinear, edges replicated when the
crop reaches past the frame).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .config import CROP_SIZE
from .face import CropBox

__all__ = ["MASK_ELLIPSE", "crop_faces", "mouth_mask", "mouth_region", "paste_mouth"]

#: The blend ellipse in crop units (0..1): centre x, centre y, radius x, radius y, feather
#: (the fraction of the radius over which the weight eases from 1 to 0). It spans the
#: crop's lower half below the nose tip, cheek to cheek short of the jaw line, to the chin.
MASK_ELLIPSE = (0.5, 0.755, 0.36, 0.235, 0.35)


@lru_cache(maxsize=4)
def mouth_mask(size: int = CROP_SIZE) -> np.ndarray:
    """(size, size) float32 blend weights in crop pixels; exactly 0 outside the ellipse."""
    cx, cy, rx, ry, feather = MASK_ELLIPSE
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    u, v = np.meshgrid(centres, centres)
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    ramp = np.clip((1.0 - r) / feather, 0.0, 1.0)
    weight = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no kink at either end of the feather
    weight[v < 0.5] = 0.0  # never above the crop's middle (the UNet keeps that half)
    weight = weight.astype(np.float32)
    weight.flags.writeable = False
    return weight


def mouth_region(box: CropBox, frame_shape: tuple[int, ...], size: int = CROP_SIZE) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end-exclusive: the frame pixels the blend may change for `box`
    (the ellipse's bounding box, widened by the bilinear reach), clipped to the frame."""
    cx, cy, rx, ry, _ = MASK_ELLIPSE
    w, h = box.x2 - box.x1, box.y2 - box.y1
    # Bilinear sampling reads the mask pixel on either side: two crop pixels of reach, in frame pixels.
    mx, my = 2.0 * w / size + 1.0, 2.0 * h / size + 1.0
    x0 = int(np.floor(box.x1 + (cx - rx) * w - mx))
    x1 = int(np.ceil(box.x1 + (cx + rx) * w + mx)) + 1
    y0 = int(np.floor(box.y1 + max(0.5, cy - ry) * h - my))
    y1 = int(np.ceil(box.y1 + (cy + ry) * h + my)) + 1
    height, width = frame_shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def crop_faces(frames: np.ndarray, boxes: list[CropBox], size: int = CROP_SIZE) -> np.ndarray:
    """(n, size, size, 3) uint8 crops of `frames[i]` at `boxes[i]` (stretched to square, as
    MuseTalk resizes its crop)."""
    import cv2

    out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        out[i] = cv2.warpAffine(frame, box.to_crop(size), (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
    return out


def paste_mouth(frame: np.ndarray, generated: np.ndarray, box: CropBox) -> None:
    """Blend `generated` (size×size×3 uint8, the re-drawn crop) into `frame` in place, inside
    `mouth_region(box)` only."""
    import cv2

    size = generated.shape[0]
    region = mouth_region(box, frame.shape, size)
    if region is None:
        return
    x0, y0, x1, y1 = region
    to_crop = box.to_crop(size)
    to_crop[:, 2] += to_crop[:, :2] @ np.array([x0, y0], dtype=np.float64)  # region pixel → crop pixel
    dsize = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face = cv2.warpAffine(generated, to_crop, dsize, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(mouth_mask(size), to_crop, dsize, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0.0)
    patch = frame[y0:y1, x0:x1].astype(np.float32)
    patch += weight[..., None] * (face.astype(np.float32) - patch)
    frame[y0:y1, x0:x1] = np.rint(patch).astype(np.uint8)
