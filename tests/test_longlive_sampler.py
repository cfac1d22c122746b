"""Streaming with the KV window: cache equals full recompute, re-cache keeps the sink, no cap."""

import pytest
import torch

from comfyui_persona.video.longlive.config import WanConfig
from comfyui_persona.video.longlive.model import CausalWanModel, init_random_
from comfyui_persona.video.longlive.sampler import StreamingSampler

LAT_H, LAT_W = 4, 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def tiny(seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    return init_random_(CausalWanModel(WanConfig.from_name("tiny")), seed=seed, std=0.2).eval()


def chunks(n: int, seed: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 4, 3, LAT_H, LAT_W, generator=gen) for _ in range(n)]


def stream_clean(model: CausalWanModel, clean: list[torch.Tensor], text: torch.Tensor, *,
                 refresh: bool = True) -> list[torch.Tensor | None]:
    """Write clean chunks into the cache at t = 0: with refresh passes (K/V only, no output)
    or with full passes (their outputs returned)."""
    model.setup_caches(1, LAT_H, LAT_W)
    model.set_prompt(text)
    outs = []
    for c in clean:
        plan = model.begin_chunk()
        outs.append(model.forward_chunk(c, torch.zeros(1), plan, refresh=refresh))
        model.window.commit(plan)
    return outs


def per_frame_t(n_clean_chunks: int, t: float) -> torch.Tensor:
    return torch.tensor([[0.0] * 3 * n_clean_chunks + [t] * 3])


@torch.no_grad()
@pytest.mark.parametrize("refresh", [False, True], ids=["full-passes", "refresh-passes"])
def test_cached_chunks_equal_full_block_causal_forward(refresh):
    """Every chunk's output equals the whole-clip block-causal forward. Refresh passes return
    nothing and stop the last block once its K/V are written: the chunk after them still
    matches, so every layer's K/V (the last one's included) were written in full."""
    model, text = tiny(), torch.randn(1, 5, 24)
    clean, noisy = chunks(3), chunks(1, seed=9)[0]
    outs = stream_clean(model, clean, text, refresh=refresh)
    plan = model.begin_chunk()
    last = model.forward_chunk(noisy, torch.tensor([833.3]), plan)
    full = model.forward_full(torch.cat(clean + [noisy], dim=2), per_frame_t(3, 833.3), text, block_causal=True)
    torch.testing.assert_close(last, full[:, :, -3:], rtol=1e-5, atol=1e-5)
    if refresh:
        assert outs == [None, None, None]
    else:
        torch.testing.assert_close(torch.cat(outs, dim=2), full[:, :, :-3], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_fused_qkv_gives_the_same_passes():
    """`fuse_qkv` (one stacked linear) changes no output and no cached key/value."""
    text, clean, noisy = torch.randn(1, 5, 24), chunks(3), chunks(1, seed=9)[0]
    results = []
    for fuse in (False, True):
        model = tiny()
        if fuse:
            for block in model.blocks:
                block.self_attn.fuse_qkv()
            assert not hasattr(model.blocks[0].self_attn, "q")
        stream_clean(model, clean, text)
        last = model.forward_chunk(noisy, torch.tensor([625.0]), model.begin_chunk())
        results.append((last, model.cache_k.clone(), model.cache_v.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_evicted_window_equals_full_forward_over_sink_and_kept_chunks():
    """After eviction, chunk 5 sees the sink (chunk 0), chunks 3..4 and itself, at
    block-relative positions 0..11. One layer, so cached K/V depend on their chunk only."""
    torch.manual_seed(0)
    model = init_random_(CausalWanModel(WanConfig.from_name("tiny").replace(num_layers=1)), std=0.2).eval()
    text = torch.randn(1, 5, 24)
    clean, noisy = chunks(5), chunks(1, seed=9)[0]
    stream_clean(model, clean, text)
    assert model.window.ring_age == [2, 3, 1]  # chunk 4 reused the slot of chunk 1
    plan = model.begin_chunk()
    last = model.forward_chunk(noisy, torch.tensor([625.0]), plan)
    kept = [clean[0], clean[3], clean[4], noisy]
    full = model.forward_full(torch.cat(kept, dim=2), per_frame_t(3, 625.0), text, block_causal=True)
    torch.testing.assert_close(last, full[:, :, -3:], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_prompt_switch_recache_keeps_sink_and_rewrites_window():
    model = tiny()
    sampler = StreamingSampler(model, seed=3)
    sampler.start(LAT_H, LAT_W)
    old_text, new_text = torch.randn(1, 5, 24), torch.randn(1, 5, 24)
    sampler.set_prompt(old_text)
    for _ in range(5):
        sampler.next_chunk()
    rows = model.window.chunk * model.window.tokens_per_frame  # cache rows per chunk slot
    before_k = model.cache_k.clone()
    sampler.set_prompt(new_text)
    assert torch.equal(model.cache_k[..., :rows, :], before_k[..., :rows, :])  # sink untouched
    assert not torch.allclose(model.cache_k[..., rows:, :], before_k[..., rows:, :])
    # Reference: a fresh cache where the sink was written under the old prompt and the
    # window's chunks, oldest first, under the new one. The re-cache must equal it exactly.
    ring = list(model.window.ring_age)
    reference = tiny()
    stream_clean(reference, [sampler.clean[0]], old_text)
    reference.set_prompt(new_text)
    for s in ring:
        plan = reference.begin_chunk()
        reference.forward_chunk(sampler.clean[s], torch.zeros(1), plan, refresh=True)
        reference.window.commit(plan)
    for i, s in enumerate(ring):
        torch.testing.assert_close(
            model.cache_k[..., s * rows:(s + 1) * rows, :],
            reference.cache_k[..., (1 + i) * rows:(2 + i) * rows, :], rtol=1e-6, atol=1e-6,
        )


@torch.no_grad()
def test_same_seed_same_video_other_seed_other_video():
    def run(seed: int) -> torch.Tensor:
        sampler = StreamingSampler(tiny(), seed=seed)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(torch.ones(1, 5, 24))
        return torch.cat([sampler.next_chunk() for _ in range(3)], dim=2)

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


@torch.no_grad()
def test_streams_past_1024_latent_frames_with_fixed_cache_memory():
    model = tiny()
    sampler = StreamingSampler(model, steps=1, seed=0)
    sampler.start(2, 2)
    sampler.set_prompt(torch.randn(1, 5, 24))
    ptr, shape = model.cache_k.data_ptr(), model.cache_k.shape
    frames = 0
    while frames < 1032:
        x = sampler.next_chunk()
        frames += x.shape[2]
    assert torch.isfinite(x).all() and x.abs().mean() > 0.05
    assert model.cache_k.data_ptr() == ptr and model.cache_k.shape == shape
    assert sampler.chunks_done == 344 and len(model.window.ring_age) == model.window.ring_chunks


@torch.no_grad()
def test_sparse_router_with_all_blocks_kept_equals_dense_through_the_ring_cache():
    """H7's block-sparse path sees our ring layout (sink first, own keys anywhere) correctly."""
    from comfyui_persona.video.attention import make_router

    cfg = WanConfig.from_name("tiny").replace(num_layers=6, dim=64, num_heads=1)
    model = init_random_(CausalWanModel(cfg), std=0.2).eval()
    sampler = StreamingSampler(model, seed=1)
    sampler.start(16, 16)
    sampler.set_prompt(torch.randn(1, 5, 24))
    dense = [sampler.next_chunk() for _ in range(6)]
    router = make_router({"sparge_attention": True, "sparge_topk": 1.0, "sparge_timestep_threshold": 1000},
                         num_layers=6, sink_tokens=3 * 64)
    model.set_router(router)
    sampler.reset()
    sparse = [sampler.next_chunk() for _ in range(6)]
    assert router.stats["sparse"] > 0
    torch.testing.assert_close(torch.cat(sparse, 2), torch.cat(dense, 2), rtol=1e-4, atol=1e-4)


def test_compiled_block_traces_without_graph_breaks_and_matches_eager():
    """One block graph per cache fill level, reused by every layer (regional compilation).

    Traced with the "eager" backend so the test pays for tracing, not for C++ codegen; the
    inductor path is exercised by benchmarks/longlive.py --compile on the GPU."""
    from torch._dynamo.utils import counters

    model = tiny()

    def run() -> torch.Tensor:
        sampler = StreamingSampler(model, seed=1)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(torch.ones(1, 5, 24))
        out = [sampler.next_chunk() for _ in range(5)]
        sampler.set_prompt(torch.zeros(1, 5, 24))  # re-cache reads: the other graph shapes
        out.append(sampler.next_chunk())
        return torch.cat(out, dim=2)

    with torch.no_grad():
        eager = run()
        counters.clear()
        model.compile(scope="blocks", backend="eager", fullgraph=True)
        compiled = run()
    assert torch.equal(compiled, eager)
    assert 1 <= counters["stats"]["unique_graphs"] <= 8


@torch.no_grad()
def test_deferred_refresh_gives_the_same_frames_and_cache_through_prompt_switches():
    """Returning a chunk before its refresh pass (to show it sooner) changes nothing else:
    not the chunks after it, not the cache, also when the prompt switches while a sink
    chunk or a ring chunk still waits for its refresh."""
    model = tiny()
    texts = [torch.randn(1, 5, 24, generator=torch.Generator().manual_seed(s)) for s in (1, 2, 3)]
    # Prompt switch before chunk 1 (chunk 0, the sink, pending) and before chunk 7 (a ring chunk pending).
    switch_before = {1: texts[1], 7: texts[2]}

    def run(defer: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        sampler = StreamingSampler(model, seed=3)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(texts[0])
        out = []
        for i in range(10):
            if i in switch_before:
                sampler.set_prompt(switch_before[i])
            out.append(sampler.next_chunk(defer_refresh=defer))
        sampler.flush()
        return out, model.cache_k.clone()

    eager, eager_cache = run(defer=False)
    deferred, deferred_cache = run(defer=True)
    for a, b in zip(eager, deferred, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    torch.testing.assert_close(deferred_cache, eager_cache, rtol=0, atol=0)


@torch.no_grad()
def test_a_new_session_of_the_same_size_keeps_the_buffers_and_plans_and_empties_the_cache():
    """A new session (setup_caches again, same size) reuses the cache buffers and the chunk
    plans, which CUDA graphs are keyed on and read, and starts from an empty window; another
    size gets new ones."""
    sampler = StreamingSampler(tiny(), seed=3)
    sampler.start(LAT_H, LAT_W)
    sampler.set_prompt(torch.randn(1, 5, 24))
    first = [sampler.next_chunk() for _ in range(2)]
    model = sampler.model
    buffers, plan = model.cache_k.data_ptr(), model.window.next_plan()
    sampler.start(LAT_H, LAT_W)
    assert model.cache_k.data_ptr() == buffers and model.window.chunks_written == 0
    assert not model.cache_k.any() and not model.cache_v.any()
    again = [sampler.next_chunk() for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # same seed, empty start
    assert model.window.next_plan() is plan  # the same plan object: graph keys stay valid
    sampler.start(LAT_H, LAT_W + 2)
    assert model.cache_k.data_ptr() != buffers and model.window.next_plan() is not plan
