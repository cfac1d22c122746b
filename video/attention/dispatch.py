"""The single dispatch point for attention.

Tensors are (batch, heads, tokens, head_dim), the layout SDPA and FlexAttention take.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F


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
