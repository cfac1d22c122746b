"""Turn whatever the caller holds into RGB uint8 frames (N, H, W, 3) numpy.

The drift meter is called from the CLI (PyAV frames), from tests (numpy) and from
the engine during generation (torch tensors, maybe on the GPU, maybe float VAE
output in [-1, 1]). Conversion lives in one place so each caller states its layout
once instead of every caller guessing. torch is never imported here: tensors are
recognised by duck typing (`.detach().cpu().numpy()`).
"""

from __future__ import annotations

import numpy as np

from ...errors import PersonaError


class FrameFormatError(PersonaError, ValueError):
    """Frames were given in a layout or dtype the identity tools cannot read."""


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach()
        if str(getattr(x, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def as_rgb_frames(frames) -> np.ndarray:
    """(H, W, 3) or (N, H, W, 3) uint8 RGB (numpy or torch) → (N, H, W, 3) uint8 numpy.

    Float input is refused rather than guessed at (is it [0, 1], [-1, 1] or [0, 255]?):
    use `video_tensor_to_frames` with the value range stated.
    """
    array = _to_numpy(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise FrameFormatError(
            f"expected RGB frames shaped (H, W, 3) or (N, H, W, 3), got shape {tuple(array.shape)}; "
            "for (B, C, T, H, W) or (N, C, H, W) video tensors use video_tensor_to_frames()"
        )
    if array.dtype != np.uint8:
        raise FrameFormatError(
            f"expected uint8 frames, got {array.dtype}; convert float tensors with "
            "video_tensor_to_frames(x, value_range=(-1, 1)) (or (0, 1))"
        )
    return np.ascontiguousarray(array)


def video_tensor_to_frames(video, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """A decoded video tensor → (N, H, W, 3) uint8 RGB.

    Accepts (B, 3, T, H, W), the Wan VAE decoder's layout (batches are concatenated in
    order), or (N, 3, H, W). `value_range` is the range of the input values: (-1, 1) for
    VAE output, (0, 1) for images normalised that way, (0, 255) for float pixels.
    """
    array = _to_numpy(video).astype(np.float32, copy=False)
    if array.ndim == 5 and array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 4, 1).reshape(-1, *array.shape[3:], 3)  # B,T,H,W,C → N,H,W,C
    elif array.ndim == 4 and array.shape[1] == 3:
        array = array.transpose(0, 2, 3, 1)
    else:
        raise FrameFormatError(
            f"expected a video tensor shaped (B, 3, T, H, W) or (N, 3, H, W), got {tuple(array.shape)}"
        )
    low, high = value_range
    if not high > low:
        raise FrameFormatError(f"value_range must be (low, high) with high > low, got {value_range}")
    scaled = (array - low) * (255.0 / (high - low))
    return np.ascontiguousarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
