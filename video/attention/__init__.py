"""Attention routing: one `attention()` entry for every backend (ARCHITECTURE.md).

The LongLive model calls `attention(q, k, v, ...)` or a router's chosen function and nothing
else; which kernel runs (dense SDPA, block-sparse, SageAttention...) is a setting, decided
once per layer and step. See docs/attention.md.

The pydantic settings (`SparseAttentionConfig`, `SparseRouter`, `make_router`) load lazily,
so the kernels import with torch alone (the GPU benchmark runs where pydantic is absent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .dense import dense_attention
from .dispatch import (
    AttentionBackend,
    AttentionFn,
    AttentionRouter,
    BackendUnavailableError,
    DenseRouter,
    attention,
    explain,
)
from .sparse import BlockSparseParams, block_sparse_attention

if TYPE_CHECKING:
    from .config import SparseAttentionConfig, SparseConfigError
    from .router import SparseRouter, make_router

_LAZY = {
    "SparseAttentionConfig": "config",
    "SparseConfigError": "config",
    "SparseRouter": "router",
    "make_router": "router",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttentionBackend",
    "AttentionFn",
    "AttentionRouter",
    "BackendUnavailableError",
    "BlockSparseParams",
    "DenseRouter",
    "SparseAttentionConfig",
    "SparseConfigError",
    "SparseRouter",
    "attention",
    "block_sparse_attention",
    "dense_attention",
    "explain",
    "make_router",
]
