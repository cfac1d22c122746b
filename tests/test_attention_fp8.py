"""FP8 attention through cuDNN (video/attention/fp8.py): close to BF16 attention, capturable in a
CUDA graph, and the engine's batched passes equal each session alone with it. CUDA tests run on
the device (Hopper, with nvidia-cudnn-frontend); the CPU tests check the refusals."""

from __future__ import annotations

import pytest
import torch

from comfyui_persona.video.attention import AttentionBackend, BackendUnavailableError, explain, fp8_router
from comfyui_persona.video.attention.selfcheck import compare

needs_fp8 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
    reason="cuDNN FP8 attention needs a Hopper or newer CUDA card",
)


def test_fp8_attention_is_refused_on_cpu_with_every_reason():
    q = torch.zeros(1, 2, 8, 128)
    reasons = explain(AttentionBackend.FP8, q, q, q)
    assert reasons  # no CUDA here, or no package: each said
    with pytest.raises(BackendUnavailableError, match="fp8"):
        fp8_router("cpu")


def test_an_explicit_fp8_setting_resolves_so_and_auto_only_on_hopper():
    from comfyui_persona.video.longlive.settings import LongLiveSettings

    explicit = LongLiveSettings(attention_precision="fp8").resolved("cuda", (8, 6))
    assert explicit.fp8_attention and explicit.fp8_attention_required
    auto = LongLiveSettings(attention_precision="auto")
    assert auto.resolved("cuda", (9, 0)).fp8_attention and not auto.resolved("cuda", (9, 0)).fp8_attention_required
    assert not auto.resolved("cuda", (8, 9)).fp8_attention and not auto.resolved("cpu").fp8_attention


def _structured(heads: int, q_len: int, k_len: int, seed: int = 0):
    """Queries and keys with shared low-rank structure (peaked attention, as a trained model's),
    plus noise; bf16 on the GPU."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    basis = torch.randn(heads, 16, 128, generator=gen)
    q = torch.randn(1, heads, q_len, 16, generator=gen) @ basis + 0.3 * torch.randn(1, heads, q_len, 128, generator=gen)
    k = torch.randn(1, heads, k_len, 16, generator=gen) @ basis + 0.3 * torch.randn(1, heads, k_len, 128, generator=gen)
    v = torch.randn(1, heads, k_len, 128, generator=gen)
    return tuple(t.to("cuda", torch.bfloat16) for t in (q / 4, k / 4, v))


@pytest.mark.gpu
@needs_fp8
@pytest.mark.parametrize("q_len,k_len", [(4680, 18720), (1620, 6480), (250, 330)])
def test_fp8_attention_is_close_to_bf16_at_the_engine_s_shapes(q_len, k_len):
    from comfyui_persona.video.attention.dense import dense_attention
    from comfyui_persona.video.attention.fp8 import fp8_attention

    q, k, v = _structured(12, q_len, k_len)
    ref, out = dense_attention(q, k, v), fp8_attention(q, k, v)
    assert out.shape == ref.shape and out.dtype == torch.bfloat16
    cos, rel_l1 = compare(out, ref)
    print(f"fp8 vs bf16 at {q_len}x{k_len}: cosine {cos:.5f}, rel L1 {rel_l1:.4f}")
    assert cos > 0.99 and rel_l1 < 0.1
    assert rel_l1 > 0  # really quantised


@pytest.mark.gpu
@needs_fp8
def test_fp8_attention_replays_in_a_cuda_graph_with_the_eager_result():
    from comfyui_persona.video.attention.fp8 import fp8_attention

    q, k, v = _structured(12, 1620, 6480, seed=1)
    eager = fp8_attention(q, k, v)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fp8_attention(q, k, v)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
    q.mul_(0.5)  # new inputs in the same buffers: the replay reads them
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, fp8_attention(q, k, v))
