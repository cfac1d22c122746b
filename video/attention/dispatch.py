"""The single dispatch point for attention.

Tensors are (batch, heads, tokens, head_dim), the layout SDPA and FlexAttention take.
The model asks a router once per layer and denoising step which function to use
(`AttentionRouter.select`), never per token, so routing costs nothing in the hot loop.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Protocol

import torch
import torch.nn.functional as F

#: (q, k, v) -> out, all (batch, heads, tokens, head_dim)
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class AttentionBackend(str, Enum):
    """Where attention runs. Only `sdpa` is always available."""

    SDPA = "sdpa"


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: AttentionBackend = AttentionBackend.SDPA,
) -> torch.Tensor:
    """Dense (non-causal) attention of q over k/v; the caller decides which keys to pass."""
    if backend is AttentionBackend.SDPA:
        return F.scaled_dot_product_attention(q, k, v)
    raise ValueError(f"unknown attention backend {backend!r}")


class AttentionRouter(Protocol):
    """Chooses the attention function for one layer at one denoising step."""

    def select(self, layer: int, timestep: float, refresh: bool) -> AttentionFn:
        """`timestep` is the step's t in [0, 1000]; `refresh` marks the clean KV-refresh pass."""
        ...


class DenseRouter:
    """Dense SDPA everywhere: the default."""

    def select(self, layer: int, timestep: float, refresh: bool) -> AttentionFn:
        return F.scaled_dot_product_attention
