"""FP8 block linears: the quantisation is right, and the model still runs with them."""

from __future__ import annotations

import pytest
import torch

from comfyui_persona.video.longlive.config import WanConfig  # noqa: E402
from comfyui_persona.video.longlive.fp8 import FP8_BLOCK_LINEARS, Fp8Linear, quantize_blocks_fp8  # noqa: E402
from comfyui_persona.video.longlive.model import CausalWanModel, init_random_  # noqa: E402


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_fp8_linear_is_close_to_the_linear_but_really_quantised():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(5, 7, 64)
    fp8 = Fp8Linear(linear)
    ref, out = linear(x), fp8(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    # e4m3 keeps 3 mantissa bits: a few percent per element, averaged down by the dot product.
    assert 1e-4 < _rel(out, ref) < 0.05
    assert fp8.weight_fp8.dtype == torch.float8_e4m3fn
    assert fp8.weight.dtype == linear.weight.dtype  # what Block reads to cast its input


def test_fp8_scales_follow_each_output_channel():
    linear = torch.nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1e-3] * 8, [100.0] * 8]))
    fp8 = Fp8Linear(linear)
    x = torch.ones(1, 8)
    assert torch.allclose(fp8(x), linear(x), rtol=1e-2)  # a per-tensor scale would zero row 0


def test_quantize_blocks_replaces_every_per_pass_linear_and_keeps_the_forward_close():
    cfg = WanConfig.from_name("tiny")
    torch.manual_seed(0)
    model = init_random_(CausalWanModel(cfg)).eval()
    x = torch.randn(1, cfg.in_dim, 3, 8, 8)
    t = torch.tensor([500.0])
    context = torch.randn(1, cfg.text_len, cfg.text_dim)
    with torch.no_grad():
        ref = model.forward_full(x, t, context)
        replaced = quantize_blocks_fp8(model)
        out = model.forward_full(x, t, context)
    assert replaced == len(FP8_BLOCK_LINEARS) * cfg.num_layers
    assert quantize_blocks_fp8(model) == 0  # idempotent
    assert 0 < _rel(out, ref) < 0.1


def test_a_fused_qkv_quantises_as_one_layer_with_the_same_numbers():
    """Per-output-channel weight scales and per-token input scales: quantising q, k, v
    stacked gives the values of quantising them apart."""
    cfg = WanConfig.from_name("tiny")
    x = torch.randn(1, cfg.in_dim, 3, 8, 8)
    t = torch.tensor([500.0])
    context = torch.randn(1, cfg.text_len, cfg.text_dim)
    outs = []
    for fuse in (False, True):
        torch.manual_seed(0)
        model = init_random_(CausalWanModel(cfg)).eval()
        if fuse:
            model.fuse_qkv()
        replaced = quantize_blocks_fp8(model)
        assert replaced == (len(FP8_BLOCK_LINEARS) - 2 * fuse) * cfg.num_layers
        with torch.no_grad():
            outs.append(model.forward_full(x, t, context))
    assert isinstance(model.blocks[0].self_attn.qkv, Fp8Linear)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_the_fused_ffn_is_the_unfused_fp8_ffn():
    """`Fp8FeedForward` (ffn.0's bias, GELU and ffn.2's quantisation in one step) gives what
    ffn.0 → GELU → ffn.2 as three FP8 modules give; quantize_blocks_fp8 installs it."""
    from comfyui_persona.video.longlive.fp8 import Fp8FeedForward

    cfg = WanConfig.from_name("tiny")
    torch.manual_seed(0)
    model = init_random_(CausalWanModel(cfg)).eval()
    quantize_blocks_fp8(model)
    ffn = model.blocks[0].ffn
    assert isinstance(ffn, Fp8FeedForward) and isinstance(ffn[0], Fp8Linear) and isinstance(ffn[2], Fp8Linear)
    x = torch.randn(1, 40, cfg.dim)
    with torch.no_grad():
        unfused = ffn[2](ffn[1](ffn[0](x)))
        torch.testing.assert_close(ffn(x), unfused, rtol=0, atol=0)


def _gelu_rows(rows: int, cols: int, device: str):
    gen = torch.Generator(device="cpu").manual_seed(3)
    h = (torch.randn(rows, cols, generator=gen) * 2).to(device, torch.bfloat16)
    bias = (torch.randn(cols, generator=gen) * 0.5).to(device, torch.bfloat16)
    return h, bias


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cols", [8960, 1000])
def test_the_gelu_quantise_kernel_matches_the_unfused_ops_on_cuda(cols):
    """The Triton kernel against bias-add, GELU and per-token quantisation run one by one:
    the same scales, and e4m3 codes equal but for rare one-step differences (tanh from exp)."""
    from comfyui_persona.video.longlive.fp8_gelu import _KERNEL, gelu_quantize, gelu_quantize_reference

    assert _KERNEL is not None, "Triton is missing: the fused kernel cannot run"
    h, bias = _gelu_rows(4680, cols, "cuda")
    (q, scale), (q_ref, scale_ref) = gelu_quantize(h, bias), gelu_quantize_reference(h, bias)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (4680, cols) and scale.shape == (4680, 1)
    torch.testing.assert_close(scale, scale_ref, rtol=1e-2, atol=0)
    values, values_ref = q.float() * scale, q_ref.float() * scale_ref
    same = (q.view(torch.uint8) == q_ref.view(torch.uint8)).float().mean().item()
    assert same > 0.995, f"only {same:.4f} of the e4m3 codes agree"
    step = values_ref.abs() / 8 + scale_ref * 2.0**-9  # one e4m3 step (3 mantissa bits), subnormals
    assert ((values - values_ref).abs() <= step * 1.01).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cols", [8960, 1000, 37])
def test_the_gelu_quantise_kernel_writes_the_same_bytes_whatever_the_row_layout(cols):
    """A row split into power-of-two pieces gives the codes and scales of one padded block:
    the same per-element maths, and a max does not depend on the order it is taken in."""
    from comfyui_persona.video.longlive.fp8_gelu import launch, row_pieces

    h, bias = _gelu_rows(512, cols, "cuda")
    padded = 1 << (cols - 1).bit_length()
    (q, scale), (q_padded, scale_padded) = launch(h, bias, row_pieces(cols), 8), launch(h, bias, (padded, 0, 0), 16)
    assert torch.equal(q.view(torch.uint8), q_padded.view(torch.uint8)) and torch.equal(scale, scale_padded)


def test_a_row_splits_into_at_most_three_power_of_two_pieces_covering_it():
    from comfyui_persona.video.longlive.fp8_gelu import row_pieces

    assert row_pieces(8960) == (8192, 512, 256)
    assert row_pieces(1536) == (1024, 512, 0)
    assert row_pieces(1024) == (1024, 0, 0)
    for cols in range(1, 20000, 37):
        pieces = row_pieces(cols)
        assert all(p == 0 or p & (p - 1) == 0 for p in pieces)
        assert cols <= sum(pieces) < cols + max(1, pieces[2]), (cols, pieces)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gelu_quantise_kernel_traces_under_torch_compile():
    from comfyui_persona.video.longlive.fp8_gelu import gelu_quantize

    h, bias = _gelu_rows(256, 8960, "cuda")
    compiled = torch.compile(gelu_quantize, fullgraph=True, dynamic=False)
    (q, scale), (q_eager, scale_eager) = compiled(h, bias), gelu_quantize(h, bias)
    assert torch.equal(q.view(torch.uint8), q_eager.view(torch.uint8)) and torch.equal(scale, scale_eager)
