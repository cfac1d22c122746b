"""ChunkPipeline: the overlapped chunk loop gives the frames and the cache of the plain one."""

import pytest
import torch

from comfyui_persona.video.decoders.taehv import tiny_taehv
from comfyui_persona.video.longlive.pipeline import ChunkPipeline
from comfyui_persona.video.longlive.runtime import EngineRuntime
from comfyui_persona.video.longlive.sampler import StreamingSampler
from comfyui_persona.video.longlive.testing import tiny_dit

LAT_H, LAT_W = 4, 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_sampler(device: str = "cpu", mode: str = "stock", graphs: bool = False) -> StreamingSampler:
    # sink 3 + ring of 2 chunks: the ring wraps within a few chunks.
    runtime = EngineRuntime(tiny_dit(in_dim=16, out_dim=16, local_attn_size=9).to(device))
    runtime.use_cuda_graphs(graphs)
    sampler = StreamingSampler(runtime, seed=3, recache_mode=mode)
    sampler.start(LAT_H, LAT_W)
    return sampler


def prompts(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return tuple(torch.randn(1, 5, 24, generator=gen).to(device) for _ in range(2))


def plain_loop(sampler, decoder, script, *, recache_after: bool) -> list[torch.Tensor]:
    """The same schedule with no deferral and no side stream: each chunk refreshed at once,
    a switch re-cached before its chunk, or (after) by a full refresh plus a re-cache."""
    frames, after = [], False
    for step in script:
        if isinstance(step, torch.Tensor):
            sampler.set_prompt(step, recache=not recache_after)
            after = recache_after and sampler.chunks_done > 0
            continue
        x0 = sampler.next_chunk()
        if after:
            sampler.recache()  # the window (this chunk included) under the new prompt
            after = False
        frames.append(decoder.decode_uint8(x0)[0].cpu())
    return frames


def pipeline_loop(pipeline: ChunkPipeline, script) -> list[torch.Tensor]:
    frames = []
    for step in script:
        if isinstance(step, torch.Tensor):
            pipeline.set_prompt(step)
        else:
            frames.append(pipeline.next_frames())
    pipeline.sampler.flush()
    return frames


def run_both(recache: str, device: str = "cpu", overlap: bool = True, mode: str = "stock"):
    a, b = prompts(device)
    script = [a, "chunk", "chunk", "chunk", b, "chunk", a, "chunk", "chunk", b, "chunk", "chunk"]
    reference = tiny_sampler(device, mode)
    expected = plain_loop(reference, tiny_taehv().to(device).decode_stream(), script, recache_after=recache == "after")
    sampler = tiny_sampler(device, mode)
    pipeline = ChunkPipeline(sampler, tiny_taehv().to(device).decode_stream(), recache=recache, overlap=overlap)
    got = pipeline_loop(pipeline, script)
    return expected, got, reference, sampler


@torch.no_grad()
@pytest.mark.parametrize("mode", ["stock", "causal"])
@pytest.mark.parametrize("recache", ["before", "after"])
def test_pipeline_frames_and_cache_equal_the_plain_loop(recache, mode):
    expected, got, reference, sampler = run_both(recache, mode=mode)
    assert len(got) == len(expected) == 8
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert g.dtype == torch.uint8 and g.device.type == "cpu"
        assert torch.equal(e, g), f"chunk {i}"
    torch.testing.assert_close(sampler.cache_k, reference.cache_k)
    torch.testing.assert_close(sampler.cache_v, reference.cache_v)


@torch.no_grad()
def test_after_mode_changes_the_switched_chunk_itself():
    """'after' makes the first chunk of a switch before the re-cache: it differs from
    'before''s; chunks before any switch are the same. (The cache after the re-cache is
    checked against the plain loop above.)"""
    before, _, _, _ = run_both("before")
    after, _, _, _ = run_both("after")
    assert all(torch.equal(before[i], after[i]) for i in range(3))  # no switch yet
    assert not torch.equal(before[3], after[3])  # the switched chunk


def test_unknown_recache_timing_is_refused():
    with pytest.raises(ValueError, match="recache must be 'before' or 'after', got 'later'"):
        ChunkPipeline(tiny_sampler(), tiny_taehv().decode_stream(), recache="later")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
@pytest.mark.parametrize("recache", ["before", "after"])
def test_side_stream_decode_gives_the_frames_of_the_plain_loop_on_cuda(recache):
    expected, got, _, _ = run_both(recache, device="cuda", overlap=True)
    for e, g in zip(expected, got, strict=True):
        assert (e.int() - g.int()).abs().max() <= 1  # same kernels, other stream: at most rounding


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
@pytest.mark.parametrize("recache", ["before", "after"])
def test_cuda_graph_replay_gives_the_frames_and_cache_of_the_plain_passes(recache):
    """Steady-state passes replayed from captured graphs (every ring position through one
    graph): same frames and cache as launching the kernels one by one, and a second session
    of the same size replays the graphs of the first."""
    a, b = prompts("cuda")
    script = [a, "chunk", "chunk", "chunk", b, "chunk", a, "chunk", "chunk", b, "chunk", "chunk"]
    runs = []
    for graphs in (False, True):
        sampler = tiny_sampler("cuda", graphs=graphs)
        pipeline = ChunkPipeline(sampler, tiny_taehv().to("cuda").decode_stream(), recache=recache)
        frames = pipeline_loop(pipeline, script)
        captured = dict(sampler.runtime._graphs or {})
        sampler.start(LAT_H, LAT_W)  # a second session of the same size: replays, no new capture
        again = pipeline_loop(ChunkPipeline(sampler, tiny_taehv().to("cuda").decode_stream(), recache=recache), script)
        runs.append((frames, again, sampler, captured))
    (plain, plain_again, plain_sampler, _), (replayed, replayed_again, graph_sampler, captured) = runs
    graphs = graph_sampler.runtime._graphs
    assert graphs is not None, "CUDA graph capture failed (see the logged warning)"
    assert len(captured) >= 1 and graph_sampler.runtime.graph_replays > 10, "steady passes were not replayed"
    kept = graphs.keys() == captured.keys() and all(graphs[k] is v for k, v in captured.items())
    assert kept, "the second session captured again instead of replaying"
    for i, (e, g) in enumerate(zip(plain + plain_again, replayed + replayed_again, strict=True)):
        assert (e.int() - g.int()).abs().max() <= 1, f"chunk {i}"
    torch.testing.assert_close(graph_sampler.cache_k, plain_sampler.cache_k, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(graph_sampler.cache_v, plain_sampler.cache_v, atol=1e-3, rtol=1e-3)
