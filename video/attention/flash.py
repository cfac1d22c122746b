"""FlashAttention-4's kernels (Dao-AILab's `flash-attn-4`, CuTe DSL) for long-key attention on Hopper.

Why: at LongLive's self-attention shape (a chunk's 4,680 queries over an 18,720-key window,
12 heads of 128, bf16) the package's SM90 kernel (FlashAttention-3's algorithm) beats cuDNN's
fused attention, the fastest SDPA kernel there; over a prompt's 512 keys cuDNN wins, and at
320×576 cuDNN is ahead by 5-8 % (`benchmarks/results/attention-h100-2026-12-06-flash.json`,
`...-12-07-fa3-fp8.json`). So `flash_dense_attention` uses it where both queries and keys are
many (`MIN_QUERIES`, `MIN_KEYS`), and the engine only where it was measured:
compute capability 9.x (`flash_by_default`; asked for explicitly, it also runs on Blackwell,
FlashAttention-4's other target).

Not a dependency of the package: the `[flash]` extra installs it (with NVIDIA's CUTLASS DSL,
about 240 MB). It compiles its kernel on first use (seconds; the engine's load-time
self-check is that first use) and launches on PyTorch's current stream, so CUDA graphs capture it. Tensors stay in our
(batch, heads, tokens, head_dim) layout: FlashAttention reads (batch, tokens, heads, head_dim)
by strides, so the transposes below are views, not copies.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from .dense import dense_attention

#: Keys and queries from which FlashAttention-4 is used. Below either, cuDNN is as fast or faster:
#: over a prompt's 512 keys (cross-attention), and for a 320x576 chunk's 2,160 queries
#: (`benchmarks/results/attention-h100-2026-12-07-fa3-fp8.json`).
MIN_KEYS = 4096
MIN_QUERIES = 4096
_HEAD_DIMS = (64, 96, 128)
_HALF = (torch.float16, torch.bfloat16)


def flash_missing() -> str | None:
    """Why `flash-attn-4` cannot be used in this process at all, or None when it is importable."""
    try:  # finding the submodule imports `flash_attn`, which FlashAttention-2 also names
        found = importlib.util.find_spec("flash_attn") is not None and importlib.util.find_spec("flash_attn.cute")
    except Exception as exc:  # noqa: BLE001 - a broken build may raise anything on import
        return f"package flash_attn does not import ({exc}); install flash-attn-4 (pip install 'comfyui-persona[flash]')"
    if not found:
        return "package flash-attn-4 is not installed (pip install 'comfyui-persona[flash]')"
    return None


def flash_card_reasons(capability: tuple[int, int] | None) -> list[str]:
    """Why a card (its CUDA compute capability; None: no CUDA device) cannot run FlashAttention-4's
    kernels (SM90, Hopper; SM100, Blackwell)."""
    if capability is None:
        return ["needs a CUDA device"]
    if capability[0] not in (9, 10):
        return [f"needs compute capability 9.x (Hopper) or 10.x (Blackwell); card has {capability}"]
    return []


def flash_by_default(capability: tuple[int, int] | None) -> bool:
    """Whether `attention_kernel="auto"` uses it on this card: on Hopper, where it was measured
    faster than cuDNN, when the package imports."""
    return capability is not None and capability[0] == 9 and flash_missing() is None


def flash_constraints(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    """Why FlashAttention-4 cannot run these tensors (empty: it can)."""
    reasons = flash_card_reasons(torch.cuda.get_device_capability(q.device) if q.is_cuda else None)
    if q.dtype not in _HALF:
        reasons.append(f"needs float16 or bfloat16, got {q.dtype}")
    if q.shape[-1] not in _HEAD_DIMS:
        reasons.append(f"needs head_dim in {_HEAD_DIMS}, got {q.shape[-1]}")
    return reasons


@functools.cache
def _kernel():
    from flash_attn.cute import flash_attn_func

    return flash_attn_func


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal attention of q over k/v, (batch, heads, tokens, head_dim) in and out."""
    out = _kernel()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    if isinstance(out, tuple):  # (out, lse) in some releases
        out = out[0]
    return out.transpose(1, 2)


def flash_dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`dense_attention`, with FlashAttention-4 where the queries and keys are many (the module
    docstring says why). For a card FlashAttention-4 passed its checks on; the engine decides that once at load."""
    if k.shape[-2] >= MIN_KEYS and q.shape[-2] >= MIN_QUERIES and q.dtype in _HALF and q.shape[-1] in _HEAD_DIMS:
        return flash_attention(q, k, v)
    return dense_attention(q, k, v)
