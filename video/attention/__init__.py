"""Attention routing: one `attention()` entry for every backend (ARCHITECTURE.md).

The LongLive model calls `attention(q, k, v, ...)` and nothing else; which kernel runs
(dense SDPA, block-sparse, SageAttention...) is a setting, decided once per layer and step.
"""

from .dispatch import AttentionBackend, AttentionFn, AttentionRouter, DenseRouter, attention

__all__ = ["AttentionBackend", "AttentionFn", "AttentionRouter", "DenseRouter", "attention"]
