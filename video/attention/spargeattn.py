"""SpargeAttn's own fused kernels (package `spas_sage_attn`), used only when installed.

Not on PyPI: it builds from source with nvcc (github.com/thu-ml/SpargeAttn). Its kernels do
the same block selection as `sparse.py` plus SageAttention's INT8/FP8 quantisation and a
second, per-warp P.V skip. Differences from our FlexAttention path that matter for LongLive:
it can force only the first key block as a sink (`attention_sink=True`), not our whole sink
and the query's own chunk, and it needs at least 128 queries.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from .sparse import BlockSparseParams

#: Compute capabilities its setup.py builds kernels for.
SUPPORTED_CAPABILITIES = ((8, 0), (8, 6), (8, 7), (8, 9), (9, 0), (12, 0))


def sparge_missing() -> str | None:
    if importlib.util.find_spec("spas_sage_attn") is None:
        return "package spas_sage_attn (SpargeAttn, built from source with nvcc) is not installed"
    return None


def sparge_constraints(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    if not q.is_cuda:
        return [f"needs a CUDA tensor, got device {q.device}"]
    reasons = []
    if q.dtype not in (torch.float16, torch.bfloat16):
        reasons.append(f"needs float16 or bfloat16, got {q.dtype}")
    cap = torch.cuda.get_device_capability(q.device)
    if cap not in SUPPORTED_CAPABILITIES:
        reasons.append(
            f"no SpargeAttn kernels for compute capability {cap}; built for {SUPPORTED_CAPABILITIES}"
        )
    if q.shape[-1] not in (64, 128):
        reasons.append(f"needs head_dim 64 or 128, got {q.shape[-1]}")
    if q.shape[-2] < 128:
        reasons.append(f"needs at least 128 queries, got {q.shape[-2]}")
    return reasons


@functools.cache
def _kernels():
    import spas_sage_attn

    return spas_sage_attn.spas_sage2_attn_meansim_topk_cuda, spas_sage_attn.spas_sage2_attn_meansim_cuda


def sparge_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, params: BlockSparseParams | None = None
) -> torch.Tensor:
    """SpargeAttn's top-k or cdf kernel with the selection settings of `params`."""
    params = params or BlockSparseParams()
    topk_kernel, cdf_kernel = _kernels()
    common = dict(
        simthreshd1=params.similarity_threshold,
        attention_sink=params.sink_tokens > 0,
        tensor_layout="HND",
        output_dtype=q.dtype,
    )
    if params.topk is not None:
        return topk_kernel(q, k, v, topk=params.topk, **common)
    return cdf_kernel(q, k, v, cdfthreshd=params.cdf_threshold, **common)
