"""FP8 (e4m3) linear layers for the DiT blocks: Hopper's fastest tensor-core path.

Why: at 480×832 a LongLive chunk is five passes through 30 blocks, and the blocks' linear
layers (self-attention q/k/v/o, cross-attention q/o, the FFN) are about 40 % of a pass on
an H100 in bf16 (benchmarks/results/longlive-h100-2026-11-25.json). H100 runs e4m3 GEMMs
at twice the bf16 rate, so quantising those linears is the largest lever left after
compiling and cuDNN attention. It is an opt-in setting (`linear_precision="fp8"`): the
released model was trained in bf16/fp32, and FP8 changes its numbers slightly
(`benchmarks/longlive.py --linear fp8` reports the error against bf16 next to the speed).

Scheme: weights are quantised once, after the checkpoint is loaded, with one scale per
output channel; activations are quantised per token at run time. On CUDA the product runs
in `torch._scaled_mm` with row-wise scales (Hopper, torch >= 2.5); elsewhere (CPU tests) the
same quantised values are multiplied in float32, so the tests check the quantisation and
the GPU benchmark checks the kernel. Cross-attention k/v are left alone: they run once
per prompt, not per pass. In the FFN, ffn.0's bias, the GELU and ffn.2's per-token
quantisation run as one fused pass (`Fp8FeedForward`, `fp8_gelu.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from .fp8_gelu import FP8_MAX, gelu_quantize, quantize_rows

#: Linear layers inside each block that run on every pass (names relative to the block).
FP8_BLOCK_LINEARS: tuple[str, ...] = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.o",
    "ffn.0",
    "ffn.2",
)
_QKV = ("self_attn.q", "self_attn.k", "self_attn.v")


class Fp8Linear(nn.Module):
    """A frozen `nn.Linear` holding e4m3 weights with per-output-channel scales."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX  # (out, 1)
        self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn))
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out) float32
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Callers cast their input to `layer.weight.dtype` (Block does); keep answering that
        # question with the original compute dtype, without keeping a second weight copy.
        self.register_buffer("_dtype_probe", torch.empty(0, dtype=linear.weight.dtype), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """An empty tensor of the compute dtype: only `.dtype` is meaningful (see __init__)."""
        return self._dtype_probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(*quantize_rows(x))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def matmul(self, xq: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        """(tokens, in) e4m3 with per-token scales (tokens, 1) → (tokens, out), no bias."""
        out_dtype = self._dtype_probe.dtype
        if xq.is_cuda:
            return torch._scaled_mm(
                xq, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale, out_dtype=out_dtype
            )
        return ((xq.float() * x_scale) @ (self.weight_fp8.float() * self.weight_scale.t()).t()).to(out_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3"


class Fp8FeedForward(nn.Sequential):
    """The block's FFN (`ffn.0`, GELU(tanh), `ffn.2`) with both linears in FP8 and the step
    between them fused: ffn.0's bias, the GELU and ffn.2's per-token quantisation in one
    pass (`fp8_gelu.gelu_quantize`). Same children, so `ffn[0].weight.dtype` still answers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, _, down = self
        h = up.matmul(*quantize_rows(x))
        y = down.matmul(*gelu_quantize(h, up.bias))
        if down.bias is not None:
            y = y + down.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], down.out_features)


def quantize_blocks_fp8(model: nn.Module, names: tuple[str, ...] = FP8_BLOCK_LINEARS) -> int:
    """Replace the per-pass linears of every block of `model` by `Fp8Linear`, in place.

    Call after the weights are loaded (and any LoRA merged): the state dict of a quantised
    model no longer has the checkpoint's layout. A fused q/k/v (`CausalWanModel.fuse_qkv`)
    is quantised as one layer: its per-output-channel scales are the three layers' own.
    Returns the number of layers replaced. (Naming any of q, k, v quantises all three once
    they are fused.) Quantise before building the `EngineRuntime` that runs the model (its
    compiled code and CUDA graphs read the weights they were made with).
    """
    replaced = 0
    for block in model.blocks:
        for name in names:
            if name in _QKV and block.self_attn.qkv is not None:  # fused (model.fuse_qkv): one layer
                name = "self_attn.qkv"
            parent_name, _, child = name.rpartition(".")
            parent = block.get_submodule(parent_name)
            layer = getattr(parent, child) if not child.isdigit() else parent[int(child)]
            if isinstance(layer, Fp8Linear):
                continue
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"block layer {name!r} is {type(layer).__name__}, not nn.Linear")
            fp8 = Fp8Linear(layer)
            if child.isdigit():
                parent[int(child)] = fp8
            else:
                setattr(parent, child, fp8)
            replaced += 1
    for block in model.blocks:
        ffn = block.ffn
        if (type(ffn) is nn.Sequential and len(ffn) == 3 and isinstance(ffn[0], Fp8Linear)
                and isinstance(ffn[2], Fp8Linear) and isinstance(ffn[1], nn.GELU) and ffn[1].approximate == "tanh"):
            block.ffn = Fp8FeedForward(*ffn)
    return replaced
