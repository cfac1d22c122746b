"""Streaming with the KV window: cache equals full recompute, re-cache semantics, no cap, restarts."""

import warnings

import pytest
import torch

from comfyui_persona.video.longlive.runtime import EngineRuntime, PassRow
from comfyui_persona.video.longlive.sampler import StreamingSampler
from comfyui_persona.video.longlive.testing import tiny_dit
from comfyui_persona.video.longlive.window import KVWindow

LAT_H, LAT_W = 4, 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chunks(n: int, seed: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 4, 3, LAT_H, LAT_W, generator=gen) for _ in range(n)]


class Clean:
    """Write clean chunks into one session's cache at t = 0, pass by pass, on the runtime."""

    def __init__(self, model, text: torch.Tensor) -> None:
        self.runtime = EngineRuntime(model)
        store = self.runtime.setup(1, LAT_H, LAT_W)
        self.window = KVWindow(store.geometry)
        self.runtime.set_text(0, text)

    def add(self, x: torch.Tensor, *, output: bool = False) -> torch.Tensor | None:
        plan = self.window.next_plan()
        self.runtime.shift(0, self.window.shift_rows())
        out = self.runtime.run([PassRow(0, plan, x, 0.0, output)])[0]
        self.window.commit(plan)
        return out

    def chunk(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """A noisy chunk's flow at t over the window as it is (not committed)."""
        plan = self.window.next_plan()
        self.runtime.shift(0, self.window.shift_rows())
        return self.runtime.run([PassRow(0, plan, x, t, True)])[0]

    @property
    def cache_k(self) -> torch.Tensor:
        return self.runtime.store.cache_k[:, 0]


def per_frame_t(n_clean_chunks: int, t: float) -> torch.Tensor:
    return torch.tensor([[0.0] * 3 * n_clean_chunks + [t] * 3])


@torch.no_grad()
@pytest.mark.parametrize("output", [False, True], ids=["refresh-passes", "full-passes"])
def test_cached_chunks_equal_full_block_causal_forward(output):
    """Every chunk's output equals the whole-clip block-causal forward. Refresh passes return
    nothing and stop the last block once its K/V are written: the chunk after them still
    matches, so every layer's K/V (the last one's included) were written in full."""
    model, text = tiny_dit(), torch.randn(1, 5, 24)
    clean, noisy = chunks(3), chunks(1, seed=9)[0]
    session = Clean(model, text)
    outs = [session.add(c, output=output) for c in clean]
    last = session.chunk(noisy, 833.3)
    full = model.forward_full(torch.cat(clean + [noisy], dim=2), per_frame_t(3, 833.3), text, block_causal=True)
    torch.testing.assert_close(last, full[:, :, -3:], rtol=1e-5, atol=1e-5)
    if not output:
        assert outs == [None, None, None]
    else:
        torch.testing.assert_close(torch.cat(outs, dim=2), full[:, :, :-3], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_fused_qkv_gives_the_same_passes():
    """`fuse_qkv` (one stacked linear) changes no output and no cached key/value."""
    text, clean, noisy = torch.randn(1, 5, 24), chunks(3), chunks(1, seed=9)[0]
    results = []
    for fuse in (False, True):
        model = tiny_dit()
        if fuse:
            model.fuse_qkv()
            assert model.blocks[0].self_attn.qkv is not None and not hasattr(model.blocks[0].self_attn, "q")
        session = Clean(model, text)
        for c in clean:
            session.add(c)
        results.append((session.chunk(noisy, 625.0), session.cache_k.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_evicted_window_equals_full_forward_over_sink_and_kept_chunks():
    """After eviction, chunk 5 sees the sink (chunk 0), chunks 3..4 and itself, at
    block-relative positions 0..11. One layer, so cached K/V depend on their chunk only."""
    model = tiny_dit(num_layers=1)
    text = torch.randn(1, 5, 24)
    clean, noisy = chunks(5), chunks(1, seed=9)[0]
    session = Clean(model, text)
    for c in clean:
        session.add(c)
    assert session.window.ring_age == [2, 3, 1]  # chunk 4 reused the slot of chunk 1
    last = session.chunk(noisy, 625.0)
    kept = [clean[0], clean[3], clean[4], noisy]
    full = model.forward_full(torch.cat(kept, dim=2), per_frame_t(3, 625.0), text, block_causal=True)
    torch.testing.assert_close(last, full[:, :, -3:], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_causal_recache_keeps_sink_and_rewrites_window():
    model = tiny_dit()
    sampler = StreamingSampler(model, seed=3, recache_mode="causal")
    sampler.start(LAT_H, LAT_W)
    old_text, new_text = torch.randn(1, 5, 24), torch.randn(1, 5, 24)
    sampler.set_prompt(old_text)
    for _ in range(5):
        sampler.next_chunk()
    rows = sampler.window.geometry.rows_per_slot
    before_k = sampler.cache_k.clone()
    sampler.set_prompt(new_text)
    assert torch.equal(sampler.cache_k[..., :rows, :], before_k[..., :rows, :])  # sink untouched
    assert not torch.allclose(sampler.cache_k[..., rows:, :], before_k[..., rows:, :])
    # A fresh cache where the sink was written under the old prompt and the window's chunks,
    # oldest first, under the new one: the re-cache must equal it.
    ring = list(sampler.window.ring_age)
    reference = Clean(tiny_dit(), old_text)
    reference.add(sampler.clean[0])
    reference.runtime.set_text(0, new_text)
    for s in ring:
        reference.add(sampler.clean[s])
    for i, s in enumerate(ring):
        torch.testing.assert_close(
            sampler.cache_k[..., s * rows:(s + 1) * rows, :],
            reference.cache_k[..., (1 + i) * rows:(2 + i) * rows, :], rtol=1e-6, atol=1e-6,
        )


@torch.no_grad()
def test_same_seed_same_video_other_seed_other_video():
    def run(seed: int) -> torch.Tensor:
        sampler = StreamingSampler(tiny_dit(), seed=seed)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(torch.ones(1, 5, 24))
        return torch.cat([sampler.next_chunk() for _ in range(3)], dim=2)

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


@torch.no_grad()
def test_streams_past_1024_latent_frames_with_fixed_cache_memory():
    sampler = StreamingSampler(tiny_dit(), steps=1, seed=0)
    sampler.start(2, 2)
    sampler.set_prompt(torch.randn(1, 5, 24))
    store = sampler.runtime.store
    ptr, shape = store.cache_k.data_ptr(), store.cache_k.shape
    frames = 0
    while frames < 1032:
        x = sampler.next_chunk()
        frames += x.shape[2]
    assert torch.isfinite(x).all() and x.abs().mean() > 0.05
    assert store.cache_k.data_ptr() == ptr and store.cache_k.shape == shape
    assert sampler.chunks_done == 344 and len(sampler.window.ring_age) == sampler.window.geometry.ring_chunks


@torch.no_grad()
def test_sparse_router_with_all_blocks_kept_equals_dense_through_the_ring_cache():
    """H7's block-sparse path sees our ring layout (sink first, own keys anywhere) correctly."""
    from comfyui_persona.video.attention import make_router

    model = tiny_dit(num_layers=6, dim=64, num_heads=1)
    sampler = StreamingSampler(model, seed=1)
    sampler.start(16, 16)
    sampler.set_prompt(torch.randn(1, 5, 24))
    dense = [sampler.next_chunk() for _ in range(6)]
    router = make_router({"sparge_attention": True, "sparge_topk": 1.0, "sparge_timestep_threshold": 1000},
                         num_layers=6, sink_tokens=3 * 64)
    sampler.reset()
    sampler.stream.router = router
    sparse = [sampler.next_chunk() for _ in range(6)]
    assert router.stats["sparse"] > 0
    torch.testing.assert_close(torch.cat(sparse, 2), torch.cat(dense, 2), rtol=1e-4, atol=1e-4)


def test_compiled_block_halves_trace_without_graph_breaks_and_match_eager():
    """Regional compilation: the two batched halves of a block, reused by every layer.

    Traced with the "eager" backend so the test pays for tracing, not for C++ codegen; the
    inductor path is exercised by benchmarks/longlive.py on the GPU. A second batch size and
    the stock re-cache's longer passes reuse the dynamic-shape graphs instead of growing
    their number with every join."""
    from torch._dynamo.utils import counters

    model = tiny_dit()

    def run(runtime) -> torch.Tensor:
        sampler = StreamingSampler(runtime, seed=1)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(torch.ones(1, 5, 24))
        out = [sampler.next_chunk() for _ in range(5)]
        sampler.set_prompt(torch.zeros(1, 5, 24))  # stock re-cache: a 3-chunk pass
        out.append(sampler.next_chunk())
        return torch.cat(out, dim=2)

    with torch.no_grad():
        eager = run(EngineRuntime(model))
        torch._dynamo.reset()  # graphs other tests compiled for the same code would be reused
        counters.clear()
        runtime = EngineRuntime(model)
        runtime.compile(backend="eager", fullgraph=True)
        compiled = run(runtime)
    assert torch.equal(compiled, eager)
    assert 2 <= counters["stats"]["unique_graphs"] <= 8


def test_compiling_with_inductor_tunes_its_kernels_unless_given_settings(tmp_path, monkeypatch):
    """Inductor's default mode gets the engine's kernel tuning (`TUNED_KERNELS`); a mode or
    explicit settings replace it ({} is Inductor's plain default, the benchmark's `untuned`).
    torch.compile is lazy: nothing is generated here."""
    from comfyui_persona.video.longlive.runtime import TUNED_KERNELS

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    runtime = EngineRuntime(tiny_dit())
    with warnings.catch_warnings():  # importing Inductor on torch's CPU build warns about torch.jit
        warnings.simplefilter("ignore", DeprecationWarning)
        runtime.compile()
    assert runtime.compiled["options"] == TUNED_KERNELS == {"coordinate_descent_tuning": True}
    runtime.compile(options={})
    assert runtime.compiled["options"] == {}
    runtime.compile("max-autotune-no-cudagraphs")
    assert runtime.compiled["options"] is None
    runtime.compile(backend="eager")
    assert runtime.compiled["options"] is None


@torch.no_grad()
def test_deferred_refresh_gives_the_same_frames_and_cache_through_prompt_switches():
    """Returning a chunk before its refresh pass (to show it sooner) changes nothing else:
    not the chunks after it, not the cache, also when the prompt switches while a sink
    chunk or a ring chunk still waits for its refresh."""
    model = tiny_dit()
    texts = [torch.randn(1, 5, 24, generator=torch.Generator().manual_seed(s)) for s in (1, 2, 3)]
    switch_before = {1: texts[1], 7: texts[2]}

    def run(defer: bool, mode: str) -> tuple[list[torch.Tensor], torch.Tensor]:
        sampler = StreamingSampler(model, seed=3, recache_mode=mode)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(texts[0])
        out = []
        for i in range(10):
            if i in switch_before:
                sampler.set_prompt(switch_before[i])
            out.append(sampler.next_chunk(defer_refresh=defer))
        sampler.flush()
        return out, sampler.cache_k.clone()

    for mode in ("stock", "causal"):
        eager, eager_cache = run(False, mode)
        deferred, deferred_cache = run(True, mode)
        for a, b in zip(eager, deferred, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
        torch.testing.assert_close(deferred_cache, eager_cache, rtol=0, atol=0)


@torch.no_grad()
def test_a_new_session_of_the_same_size_keeps_the_buffers_and_plans_and_empties_the_cache():
    """A new session (start again, same size) reuses the store's buffers and the shared plans,
    which CUDA graphs are keyed on and read, and starts from an empty window; another size
    gets new ones."""
    sampler = StreamingSampler(tiny_dit(), seed=3)
    sampler.start(LAT_H, LAT_W)
    text = torch.randn(1, 5, 24)
    sampler.set_prompt(text)
    first = [sampler.next_chunk() for _ in range(2)]
    store = sampler.runtime.store
    buffers, plan = store.cache_k.data_ptr(), sampler.window.next_plan()
    sampler.start(LAT_H, LAT_W)
    assert sampler.runtime.store is store and store.cache_k.data_ptr() == buffers
    assert sampler.window.chunks_written == 0 and not sampler.cache_k.any() and not sampler.cache_v.any()
    sampler.set_prompt(text)
    again = [sampler.next_chunk() for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # same seed, empty start
    assert sampler.window.next_plan() is plan  # the same plan object: graph keys stay valid
    sampler.start(LAT_H, LAT_W + 2)
    assert sampler.runtime.store is not store and sampler.window.next_plan() is not plan


@torch.no_grad()
def test_a_restarted_chunk_is_the_chunk_that_was_not_interrupted():
    """Stopping a chunk after two of its passes and starting it again (an interrupt) gives the
    same latents and cache as never stopping: same noise, the ring shift done once."""
    model, text = tiny_dit(), torch.randn(1, 5, 24)

    def run(stop_at: int | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        sampler = StreamingSampler(model, seed=4)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(text)
        out = []
        for i in range(6):
            if i == stop_at:
                stream = sampler.stream
                stream.request_chunk()
                for _ in range(3):  # a pending refresh, then two denoising passes
                    row = stream.next_pass()
                    stream.pass_done(sampler.runtime.run([row])[0])
                assert stream.restart_chunk() and stream.chunk_in_flight.step == 0
                latents = None
                while latents is None:
                    row = stream.next_pass()
                    latents = stream.pass_done(sampler.runtime.run([row])[0])
                out.append(latents)
            else:
                out.append(sampler.next_chunk(defer_refresh=True))
        sampler.flush()
        return out, sampler.cache_k.clone()

    plain, plain_cache = run(None)
    restarted, restarted_cache = run(4)  # chunk 4 evicts: its shift must not run twice
    for a, b in zip(plain, restarted, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain_cache, restarted_cache)


@torch.no_grad()
@pytest.mark.parametrize("mode", ["stock", "causal"])
def test_after_timing_recaches_the_window_behind_the_switched_chunk(mode):
    """"after": the chunk under the new prompt is made over the old window, then the window
    (that chunk included) is re-cached: the cache equals a loop that refreshes the chunk under the
    new text and re-caches right after it; and the chunk after it differs from never re-caching."""
    model = tiny_dit()
    old, new = torch.randn(1, 5, 24), torch.randn(1, 5, 24)

    def start() -> StreamingSampler:
        sampler = StreamingSampler(model, seed=2, recache_mode=mode)
        sampler.start(LAT_H, LAT_W)
        sampler.set_prompt(old)
        for _ in range(5):
            sampler.next_chunk()
        return sampler

    after = start()
    after.set_prompt(new, timing="after")
    switched = after.next_chunk()
    plain = start()
    plain.set_prompt(new, recache=False)
    assert torch.equal(plain.next_chunk(), switched)
    plain.recache()
    torch.testing.assert_close(after.cache_k, plain.cache_k, rtol=0, atol=0)
    never = start()
    never.set_prompt(new, recache=False)
    never.next_chunk()
    assert not torch.allclose(after.next_chunk(), never.next_chunk())


def test_every_new_chunk_and_a_stock_recache_replay_and_a_causal_pass_off_the_prefix_does_not():
    """CUDA graphs replay passes that read a prefix of the cache (`EngineRuntime.replays`): every
    plan a new chunk gets, the first chunk and the window's filling included, and the stock
    re-cache pass (the whole window at once); not a causal re-cache pass that reads the sink and
    a ring slot further on (its keys are gathered)."""
    runtime = EngineRuntime(tiny_dit(local_attn_size=9))
    store = runtime.setup(1, LAT_H, LAT_W)
    window = KVWindow(store.geometry)
    keys_read = []
    for _ in range(8):
        plan = window.next_plan()
        assert plan.replayable, plan.slots
        keys_read.append(plan.n_valid)
        window.commit(plan)
    assert keys_read == sorted(keys_read) and len(set(keys_read)) == store.geometry.n_slots  # filling, then full
    recache = window.stock_recache_plan()
    assert recache is not None and len(recache.slots) > 1 and recache.replayable
    assert not all(p.replayable for p in window.causal_recache_plans())
