"""cuDNN FP8 attention (video/attention/cudnn_fp8.py): availability reasons, the e4m3 quantiser,
and on a Hopper/Blackwell GPU with nvidia-cudnn-frontend installed, accuracy and torch.compile."""

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_persona.video.attention import AttentionBackend, BackendUnavailableError, attention, explain
from comfyui_persona.video.attention import cudnn_fp8 as fp8
from comfyui_persona.video.attention.selfcheck import compare

#: e4m3 has 3 mantissa bits: round-to-nearest is within 2^-4 of a normal value
E4M3_REL_ERROR = 2.0**-4
#: the smallest e4m3 subnormal step is 2^-9 (in scaled units), so half of it is the absolute floor
E4M3_ABS_ERROR_SCALED = 2.0**-10


def test_on_a_machine_without_the_package_or_cuda_explain_names_both():
    q = k = v = torch.zeros(1, 2, 16, 128)
    reasons = explain(AttentionBackend.CUDNN_FP8, q, k, v)
    if importlib.util.find_spec("cudnn") is None:
        assert any("pip install nvidia-cudnn-frontend==1.32.0" in r for r in reasons), reasons
    if not torch.cuda.is_available():
        assert any("CUDA" in r for r in reasons), reasons
        with pytest.raises(BackendUnavailableError, match="'cudnn_fp8' cannot run"):
            attention(q, k, v, backend="cudnn_fp8")


def test_constraints_name_the_device_first():
    q = torch.zeros(1, 2, 16, 96)
    assert fp8.cudnn_fp8_constraints(q, q, q) == ["needs CUDA tensors, got device cpu"]


@pytest.mark.parametrize("smooth", [False, True])
def test_e4m3_round_trip_is_within_the_format_error_and_keeps_the_scale_on_the_device(smooth):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 200, 64, generator=gen) * 5 + 2  # an offset shared by all tokens
    x8, descale = fp8.quantize_e4m3(x, smooth=smooth)
    assert x8.dtype == torch.float8_e4m3fn and x8.shape == x.shape
    assert isinstance(descale, torch.Tensor) and descale.dtype == torch.float32 and descale.numel() == 1
    assert descale.device == x.device
    target = x - x.mean(dim=-2, keepdim=True) if smooth else x
    back = fp8.dequantize_e4m3(x8, descale, torch.float32)
    bound = E4M3_REL_ERROR * target.abs() + E4M3_ABS_ERROR_SCALED * descale + 1e-6
    assert ((back - target).abs() <= bound).all()
    # the largest magnitude lands on e4m3's largest value, so the range is used in full
    assert x8.float().abs().max().item() == fp8.E4M3_MAX


def test_smoothing_shrinks_the_range_of_keys_with_a_shared_offset():
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(1, 2, 300, 64, generator=gen) + 10.0
    _, plain = fp8.quantize_e4m3(k)
    _, smoothed = fp8.quantize_e4m3(k, smooth=True)
    assert smoothed.item() < plain.item() / 2


def test_an_all_zero_tensor_quantises_to_zeros_not_nan():
    x8, descale = fp8.quantize_e4m3(torch.zeros(1, 1, 8, 64))
    assert not torch.isnan(x8.float()).any() and (x8.float() == 0).all()
    assert torch.isfinite(descale).all()


# --------------------------------------------------------------------------- GPU


def _fp8_ready() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    q = torch.zeros(1, 1, 8, 128, device="cuda", dtype=torch.bfloat16)
    reasons = explain(AttentionBackend.CUDNN_FP8, q, q, q)
    return "; ".join(reasons) or None


def _structured(q_len: int, k_len: int, heads: int = 4, dim: int = 128, seed: int = 0):
    """Low-rank, peaked attention (like real video tokens), not flat Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    rank = 16
    basis = torch.randn(heads, rank, dim, generator=gen) / math.sqrt(rank)
    coeff_k = torch.randn(1, heads, k_len, rank, generator=gen)
    k = coeff_k @ basis * 2.0 + 0.5  # a shared offset, which smoothing removes
    q = coeff_k[:, :, :q_len] @ basis * 2.0 + 0.3 * torch.randn(1, heads, q_len, dim, generator=gen)
    v = torch.randn(1, heads, k_len, dim, generator=gen)
    return tuple(t.to("cuda", torch.bfloat16) for t in (q, k, v))


#: cosine against bf16 SDPA on the structured data; the float32 emulation of the pipeline gives
#: ~0.998 even on flat random data, so 0.99 leaves room for cuDNN's own accumulation order
MIN_COSINE = 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("smooth_k", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "cache_view"])
def test_fp8_attention_matches_dense_sdpa(layout, smooth_k):
    why = _fp8_ready()
    if why:
        pytest.skip(why)
    q, k, v = _structured(300, 1200)
    if layout == "cache_view":  # the engine passes views of a longer KV cache
        cache_k = torch.zeros(1, 4, 1500, 128, device="cuda", dtype=torch.bfloat16)
        cache_v = torch.zeros_like(cache_k)
        cache_k[:, :, :1200], cache_v[:, :, :1200] = k, v
        k, v = cache_k[:, :, :1200], cache_v[:, :, :1200]
    out = fp8.cudnn_fp8_attention(q, k, v, smooth_k=smooth_k)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    cos, rel_l1 = compare(out, ref)
    assert cos > MIN_COSINE, (cos, rel_l1)
    assert rel_l1 < 0.1, (cos, rel_l1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dispatch_runs_fp8_after_its_self_check():
    why = _fp8_ready()
    if why:
        pytest.skip(why)
    q, k, v = _structured(256, 512, heads=2)
    out = attention(q, k, v, backend="cudnn_fp8")
    assert compare(out, F.scaled_dot_product_attention(q, k, v))[0] > MIN_COSINE


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp8_attention_compiles_into_one_graph():
    why = _fp8_ready()
    if why:
        pytest.skip(why)
    q, k, v = _structured(256, 512, heads=2)

    def block(q, k, v):  # quantise + custom op + dequantise, with work on both sides
        return fp8.cudnn_fp8_attention(q * 1.0, k, v, smooth_k=True) + 1.0

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, dynamic=False)  # raises on any graph break
    out = compiled(q, k, v)
    assert compare(out, block(q, k, v))[0] > 0.999
