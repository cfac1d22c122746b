"""A block linear's input in one pass for FP8: LayerNorm + adaLN modulation + per-token e4m3
quantisation.

Why by hand: three times a block and pass, the residual stream (tokens × 1,536 float32) is
normed, modulated per frame (`h * (1 + scale) + shift`), rounded to the compute dtype and,
for an FP8 linear, quantised per token. Inductor fuses those ops into reduction kernels that
take several passes over each row (the layer norm's statistics, then the row's amax, then the
quantisation); they were the largest kernels after attention, the GEMMs and the FFN's GELU step
(benchmarks/results/longlive-h100-2026-11-25-profile-final.json). A 1,536-wide row fits in one
Triton program's registers, so here one program per token reads its row once and writes the
e4m3 row and its scale, the recipe of `fp8_gelu.py`. No library does this step for PyTorch's
`_scaled_mm` (TransformerEngine has its own, with its own modules and build).

Numerics follow the unfused path step by step: the norm in float32 (mean, then the mean of the
squared deviations, `rsqrt(var + eps)`), the affine weight and bias when the norm has them, the
modulation in float32, the rounding to the compute dtype, then `fp8_gelu.quantize_rows`.
PyTorch's layer norm sums in another order, which can move a compute-dtype value by one ulp and,
rarely, an e4m3 code by one step (tests/test_longlive_fp8.py bounds it). On CPU (tests, no
Triton) `norm_quantize` is the unfused reference itself.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .fp8_gelu import quantize_rows


class Fp8Rows(NamedTuple):
    """A linear's input already quantised per token: `values` (tokens, features) e4m3 with
    `scale` (tokens, 1) float32; `lead_shape` is the input's shape without its last axis."""

    values: torch.Tensor
    scale: torch.Tensor
    lead_shape: tuple[int, ...]


def norm_modulate(norm: torch.nn.Module, x: torch.Tensor, shift: torch.Tensor | None,
                  scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """`norm(x)`, modulated per frame by `shift`/`scale` (B, Te, dim) when given, in `dtype`:
    the reference every block input follows. x (B, N, dim) float32, N divisible by Te."""
    h = norm(x)
    if shift is not None:
        te = shift.shape[1]
        h = (h.float().unflatten(1, (te, -1)) * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)
    return h.to(dtype)


def norm_quantize_reference(norm, x, shift, scale, dtype) -> Fp8Rows:
    """The unfused path: `norm_modulate`, then `quantize_rows`."""
    values, row_scale = quantize_rows(norm_modulate(norm, x, shift, scale, dtype))
    return Fp8Rows(values, row_scale, tuple(x.shape[:-1]))


def norm_quantize(norm: torch.nn.Module, x: torch.Tensor, shift: torch.Tensor | None,
                  scale: torch.Tensor | None, dtype: torch.dtype) -> Fp8Rows:
    """`norm_modulate` quantised per token: the fused kernel on CUDA for a float32 LayerNorm
    input in bf16/fp16, the reference elsewhere (CPU, an identity norm, a row too long)."""
    if not _fusable(norm, x, shift, scale, dtype):
        return norm_quantize_reference(norm, x, shift, scale, dtype)
    batch, tokens, cols = x.shape
    rows = batch * tokens
    out = torch.empty((rows, cols), device=x.device, dtype=torch.float8_e4m3fn)
    row_scale = torch.empty((rows, 1), device=x.device, dtype=torch.float32)
    has_affine = norm.weight is not None
    has_mod = shift is not None
    frames = shift.shape[1] if has_mod else 1
    mod_b, mod_f = (shift.stride(0) if shift.shape[0] > 1 else 0, shift.stride(1)) if has_mod else (0, 0)
    _KERNEL[(rows,)](
        x, norm.weight if has_affine else x, norm.bias if has_affine else x,
        shift if has_mod else x, scale if has_mod else x, out, row_scale,
        cols, tokens, tokens // frames, x.stride(0), x.stride(1), mod_b, mod_f, float(norm.eps),
        HAS_AFFINE=has_affine, HAS_MOD=has_mod, ROUND_BF16=dtype == torch.bfloat16,
        BLOCK=1 << (cols - 1).bit_length(), num_warps=4 if cols <= 2048 else 8,
    )
    return Fp8Rows(out, row_scale, (batch, tokens))


def _fusable(norm, x, shift, scale, dtype) -> bool:
    """Whether the kernel takes these inputs (else the reference runs)."""
    return (
        _KERNEL is not None and x.is_cuda and x.dtype == torch.float32 and x.dim() == 3
        and x.stride(2) == 1 and isinstance(norm, torch.nn.LayerNorm) and len(norm.normalized_shape) == 1
        and x.shape[-1] <= _MAX_ROW and dtype in (torch.bfloat16, torch.float16)
        and (norm.weight is None or (norm.weight.is_contiguous() and norm.bias is not None))
        and (shift is None or (shift.dtype == scale.dtype == torch.float32 and shift.stride() == scale.stride()
                               and shift.stride(-1) == 1 and shift.shape[0] in (1, x.shape[0])
                               and x.shape[1] % shift.shape[1] == 0))
    )


#: The longest row one program holds (float32 values in registers).
_MAX_ROW = 8192


def _build_kernel():
    """The Triton kernel, or None where Triton is not installed (CPU builds of torch). Built
    at import, so compiled code sees a constant (torch.compile traces user Triton kernels)."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def norm_modulate_quantize(x_ptr, w_ptr, b_ptr, shift_ptr, scale_ptr, out_ptr, row_scale_ptr,
                               cols, tokens, tokens_per_frame, x_b_stride, x_n_stride, mod_b_stride,
                               mod_f_stride, eps,
                               HAS_AFFINE: tl.constexpr, HAS_MOD: tl.constexpr, ROUND_BF16: tl.constexpr,
                               BLOCK: tl.constexpr):
        row = tl.program_id(0)
        batch = row // tokens
        offsets = tl.arange(0, BLOCK)
        mask = offsets < cols
        x = tl.load(x_ptr + batch * x_b_stride + (row % tokens) * x_n_stride + offsets, mask=mask, other=0.0)
        mean = tl.sum(x, axis=0) / cols
        d = tl.where(mask, x - mean, 0.0)
        var = tl.sum(d * d, axis=0) / cols
        y = d * tl.math.rsqrt(var + eps)
        if HAS_AFFINE:
            w = tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            b = tl.load(b_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
            y = y * w + b
        if HAS_MOD:
            frame = (row % tokens) // tokens_per_frame
            at = batch * mod_b_stride + frame * mod_f_stride + offsets
            sc = tl.load(scale_ptr + at, mask=mask, other=0.0)
            sh = tl.load(shift_ptr + at, mask=mask, other=0.0)
            y = y * (1.0 + sc) + sh
        if ROUND_BF16:
            y = y.to(tl.bfloat16).to(tl.float32)
        else:
            y = y.to(tl.float16).to(tl.float32)
        y = tl.where(mask, y, 0.0)
        amax = tl.max(tl.abs(y), axis=0)
        row_scale = tl.maximum(amax, 1e-12) / 448.0
        tl.store(out_ptr + row * cols + offsets, (y / row_scale).to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(row_scale_ptr + row, row_scale)

    return norm_modulate_quantize


_KERNEL = _build_kernel()
