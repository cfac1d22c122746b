"""FP8 block linears: the quantisation is right, and the model still runs with them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

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
