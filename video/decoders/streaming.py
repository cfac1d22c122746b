"""One interface over both decoders, so the engine switches TAE ↔ full VAE by a setting.

Both take the diffusion model's normalized latents, chunk by chunk, and return uint8 RGB
frames (B, T, H, W, 3) on the model's device; `reset()` starts a new stream (a new session,
or after a hard cut). Frame counts are the same for both: 1 + 4(T-1) for the first chunk of
T latent frames, 4T for every later chunk.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["DECODERS", "StreamingDecoder", "frames_for", "open_stream"]

#: Names the engine config uses.
DECODERS = ("tae", "vae")  # matches video/longlive/settings.py `decoder`


@runtime_checkable
class StreamingDecoder(Protocol):
    def reset(self) -> None: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Float frames (B, 3, T, H, W): [-1, 1] for the Wan VAE, [0, 1] for TAEHV."""
        ...

    def decode_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, T, H, W, 3)."""
        ...


def open_stream(model) -> StreamingDecoder:
    """A fresh decode stream over a `WanVAE` or a `TAEHV`."""
    from .taehv import TAEHV
    from .wan_vae import WanVAE

    if not isinstance(model, (WanVAE, TAEHV)):
        raise TypeError(f"not a decoder model: {type(model).__name__} (expected WanVAE or TAEHV)")
    return model.decode_stream()


def frames_for(latent_frames: int, first_chunk: bool) -> int:
    """Video frames a chunk of `latent_frames` decodes to."""
    return 4 * latent_frames - (3 if first_chunk else 0)
