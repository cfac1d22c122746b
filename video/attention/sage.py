"""SageAttention (quantised attention kernels by thu-ml), used only when installed.

Two packages: `sageattention` (v1 on PyPI: Triton INT8 QK; v2 builds from source with CUDA)
runs on Ampere, Ada and Hopper; `sageattn3` (SageAttention3, FP4 microscaling) builds from
source and runs only on Blackwell (compute capability 10.x / 12.x). Neither is a dependency:
imports are guarded and each check says why a backend cannot run a call.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

_HALF = (torch.float16, torch.bfloat16)


def _cuda_reasons(q: torch.Tensor, min_capability: tuple[int, int] | None = None) -> list[str]:
    if not q.is_cuda:
        return [f"needs a CUDA tensor, got device {q.device}"]
    reasons = []
    if q.dtype not in _HALF:
        reasons.append(f"needs float16 or bfloat16, got {q.dtype}")
    cap = torch.cuda.get_device_capability(q.device)
    if min_capability and cap < min_capability:
        reasons.append(f"needs compute capability >= {min_capability}, card has {cap}")
    return reasons


def sage_missing() -> str | None:
    """Why `sageattention` cannot be used at all, or None when it is importable."""
    if importlib.util.find_spec("sageattention") is None:
        return "package sageattention is not installed (pip install sageattention==1.0.6)"
    return None


def sage_constraints(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    reasons = _cuda_reasons(q, (8, 0))
    if q.shape[-1] not in (64, 96, 128):
        reasons.append(f"needs head_dim 64, 96 or 128, got {q.shape[-1]}")
    return reasons


@functools.cache
def _sageattn():
    from sageattention import sageattn

    return sageattn


def sage_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sageattention's INT8 kernel. Its own K smoothing subtracts the mean *in place*
    (`k -= km` in 1.0.6), which would corrupt a caller's keys, so we smooth out of place."""
    k = k - k.mean(dim=-2, keepdim=True)
    return _sageattn()(q, k, v, tensor_layout="HND", is_causal=False, smooth_k=False)


def sage3_missing() -> str | None:
    if importlib.util.find_spec("sageattn3") is None:
        return "package sageattn3 (SageAttention3, built from source) is not installed"
    return None


def sage3_constraints(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    reasons = _cuda_reasons(q)
    if q.is_cuda:
        cap = torch.cuda.get_device_capability(q.device)
        if cap[0] not in (10, 12):
            name = torch.cuda.get_device_name(q.device)
            reasons.append(
                f"SageAttention3 FP4 needs a Blackwell card (capability 10.x/12.x); {name} is {cap}"
            )
    if q.shape[-1] not in (64, 128):
        reasons.append(f"needs head_dim 64 or 128, got {q.shape[-1]}")
    return reasons


@functools.cache
def _sageattn3():
    from sageattn3 import sageattn3_blackwell

    return sageattn3_blackwell


def sage3_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _sageattn3()(q, k, v, is_causal=False)
