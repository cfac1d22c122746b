"""Dense attention through PyTorch SDPA, preferring cuDNN then FlashAttention on CUDA.

On Hopper, cuDNN's fused attention and FlashAttention-2 are the fast SDPA kernels; plain
`scaled_dot_product_attention` lets PyTorch pick, and its pick has changed between releases,
so the order is stated here once (ARCHITECTURE.md: the dense default on Hopper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend


def _takes_set_priority() -> bool:
    # torch>=2.6: `set_priority=True` makes the list an order, not just an allowed set.
    import inspect

    from torch.nn.attention import sdpa_kernel

    return "set_priority" in inspect.signature(sdpa_kernel).parameters


_PRIORITY = {"set_priority": True} if _takes_set_priority() else {}


# cuDNN first: 1.06 ms vs FlashAttention-2's 1.81 ms at LongLive's 4,680 x 18,720 shape on
# H100 (benchmarks/results/attention-h100-2026-11-25.json). A plain list, not a cached
# function, so torch.compile traces the `sdpa_kernel` context with no warning.
_CUDA_KERNEL_ORDER = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal attention of q over k/v, (batch, heads, tokens, head_dim)."""
    if not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v)
    # Also inside torch.compile: dynamo traces the context manager.
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(_CUDA_KERNEL_ORDER, **_PRIORITY):
        return F.scaled_dot_product_attention(q, k, v)


def sdpa_with(kernel: str):
    """SDPA pinned to one kernel ("cudnn", "flash", "efficient", "math"), for benchmarks."""
    from torch.nn.attention import sdpa_kernel

    chosen = {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }[kernel]

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel([chosen]):
            return F.scaled_dot_product_attention(q, k, v)

    run.__name__ = f"sdpa_{kernel}"
    return run
