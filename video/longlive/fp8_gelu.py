"""The FP8 FFN's middle step in one pass: bias + GELU(tanh) + per-token e4m3 quantisation.

Why by hand: with FP8 block linears, the FFN's first GEMM writes (tokens × 8,960) bf16 and
the second one needs that, through GELU, quantised per token. Inductor fuses those ops into
one reduction kernel, but a reduction over 8,960 columns is past its persistent-reduction
limit, so it reads each row twice (amax pass, then quantise pass) and was the largest
kernel after attention and the GEMMs: 24 ms of a 291 ms chunk at 480×832 on an H100
(benchmarks/results/longlive-h100-2026-11-25-profile-final.json; its "multi-kernel" option
did not help). No library does this fused step for PyTorch's `_scaled_mm` (TransformerEngine
has its own, with its own modules and build). Here one Triton program holds one whole row
in registers, as up to three power-of-two blocks (`row_pieces`): one read of the GEMM
output, one write of the e4m3 row and its scale. A chunk
went from 288.4–291.4 to 283.1 ms (benchmarks/results/longlive-h100-2026-11-25-fused-ffn.json).

Numerics follow the unfused path step by step: the bias is added in bf16, GELU is computed
in float32 from that and rounded to bf16, the row's scale is max|row| / 448 (float32),
values are divided by it and cast to e4m3 with round-to-nearest. The one difference is tanh,
computed here from exp (within a float32 ulp or two of libm's), which can move a bf16 GELU
value by one ulp and, rarely, an e4m3 code by one step (tests/test_longlive_fp8.py bounds it).
On CPU (tests, no Triton) `gelu_quantize` is the unfused reference itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Largest finite float8_e4m3fn value (as in fp8.py, which imports this module).
FP8_MAX = 448.0


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token e4m3 quantisation: (values / scale as float8_e4m3fn, scale (tokens, 1) float32)."""
    xf = x.reshape(-1, x.shape[-1]).float()
    scale = xf.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (xf / scale).to(torch.float8_e4m3fn), scale


def gelu_quantize_reference(h: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The unfused path: `h + bias` in h's dtype, GELU(tanh), `quantize_rows`."""
    y = h if bias is None else h + bias.to(h.dtype)
    return quantize_rows(F.gelu(y, approximate="tanh"))


def gelu_quantize(h: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """GELU(h + bias) quantised per token, h (tokens, features) bf16/fp16: the fused kernel on
    CUDA, the reference elsewhere (or for a row too long for one program)."""
    if _KERNEL is None or not h.is_cuda or h.dim() != 2 or h.shape[1] > _MAX_ROW or h.stride(1) != 1:
        return gelu_quantize_reference(h, bias)
    cols = h.shape[1]
    return launch(h, bias, row_pieces(cols), _warps(cols))


#: The longest row one program holds (its fp32 values stay in the program's registers).
_MAX_ROW = 16384


def row_pieces(cols: int) -> tuple[int, int, int]:
    """A row of `cols` as at most three power-of-two blocks (Triton's blocks are powers of two),
    the last one masked where it runs past the row: 8,960 = 8,192 + 512 + 256.

    Why: one block padded to the next power of two (16,384 for 8,960) holds 45 % masked lanes in
    registers, which halves how many rows an SM keeps in flight on a memory-bound kernel
    (both timed: benchmarks/results/gelu-quantize-h100-2026-12-07.json)."""
    first = 1 << (cols.bit_length() - 1)
    rest = cols - first
    second = 1 << (rest.bit_length() - 1) if rest else 0
    rest -= second
    third = 1 << (rest - 1).bit_length() if rest else 0
    return first, second, third


def _warps(cols: int) -> int:
    return 8 if cols >= 4096 else 4


def launch(h: torch.Tensor, bias: torch.Tensor | None, pieces: tuple[int, int, int],
           num_warps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the kernel over `h` (tokens, cols), contiguous rows, with the row split into
    `pieces` (`row_pieces`, or one padded block `(next power of two, 0, 0)`: the layout before,
    which `benchmarks/gelu_quantize.py` times beside it)."""
    rows, cols = h.shape
    out = torch.empty((rows, cols), device=h.device, dtype=torch.float8_e4m3fn)
    scale = torch.empty((rows, 1), device=h.device, dtype=torch.float32)
    has_bias = bias is not None
    _KERNEL[(rows,)](
        h, bias if has_bias else h, out, scale, cols, h.stride(0), out.stride(0),
        HAS_BIAS=has_bias, B0=pieces[0], B1=pieces[1], B2=pieces[2], num_warps=num_warps,
    )
    return out, scale


try:  # CPU builds of torch come without Triton: the reference runs there
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:  # module level: a Triton kernel finds the functions it calls among its globals

    @triton.jit
    def _gelu_piece(h_ptr, bias_ptr, row_start, start, cols, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
        """GELU of columns start..start+BLOCK of a row (float32; 0 past the row)."""
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < cols
        y = tl.load(h_ptr + row_start + offsets, mask=mask, other=0.0)
        if HAS_BIAS:
            b = tl.load(bias_ptr + offsets, mask=mask, other=0.0)
            y = (y.to(tl.float32) + b.to(tl.float32)).to(h_ptr.dtype.element_ty)  # the bf16 add
        x = y.to(tl.float32)
        z = 0.7978845608028654 * (x + 0.044715 * x * x * x)  # sqrt(2/pi) (x + 0.044715 x^3)
        tanh = 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)
        g = (0.5 * x * (1.0 + tanh)).to(h_ptr.dtype.element_ty).to(tl.float32)  # GELU, rounded as eager
        return tl.where(mask, g, 0.0)

    @triton.jit
    def _store_piece(out_ptr, row_start, start, cols, values, BLOCK: tl.constexpr):
        offsets = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + row_start + offsets, values.to(out_ptr.dtype.element_ty), mask=offsets < cols)

    @triton.jit
    def bias_gelu_quantize(h_ptr, bias_ptr, out_ptr, scale_ptr, cols, h_stride, out_stride,
                           HAS_BIAS: tl.constexpr, B0: tl.constexpr, B1: tl.constexpr, B2: tl.constexpr):
        row = tl.program_id(0)
        g0 = _gelu_piece(h_ptr, bias_ptr, row * h_stride, 0, cols, HAS_BIAS, B0)
        amax = tl.max(tl.abs(g0), axis=0)
        if B1 > 0:
            g1 = _gelu_piece(h_ptr, bias_ptr, row * h_stride, B0, cols, HAS_BIAS, B1)
            amax = tl.maximum(amax, tl.max(tl.abs(g1), axis=0))
        if B2 > 0:
            g2 = _gelu_piece(h_ptr, bias_ptr, row * h_stride, B0 + B1, cols, HAS_BIAS, B2)
            amax = tl.maximum(amax, tl.max(tl.abs(g2), axis=0))
        scale = tl.maximum(amax, 1e-12) / 448.0
        _store_piece(out_ptr, row * out_stride, 0, cols, g0 / scale, B0)
        if B1 > 0:
            _store_piece(out_ptr, row * out_stride, B0, cols, g1 / scale, B1)
        if B2 > 0:
            _store_piece(out_ptr, row * out_stride, B0 + B1, cols, g2 / scale, B2)
        tl.store(scale_ptr + row, scale)

    _KERNEL = bias_gelu_quantize
else:
    _KERNEL = None
