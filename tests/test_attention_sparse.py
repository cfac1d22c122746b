"""Block-sparse attention (SpargeAttn's selection on FlexAttention), on CPU, float32."""

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_persona.video.attention import BlockSparseParams, block_sparse_attention
from comfyui_persona.video.attention.sparse import block_map_density, build_block_map


def random_qkv(q_len=200, k_len=530, heads=2, dim=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, heads, n, dim, generator=gen) for n in (q_len, k_len, k_len))


def structured_qkv(q_len=192, k_len=768, heads=2, dim=32, seed=0):
    """Smooth low-rank content over token position plus noise: attention with real structure."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.arange(k_len, dtype=torch.float32)[:, None] / k_len
    freqs = torch.randn(1, 8, generator=gen) * 6
    field = torch.cos(2 * math.pi * pos * freqs + torch.rand(8, generator=gen) * 6)
    proj = torch.randn(heads, 8, dim, generator=gen)
    k = torch.einsum("nr,hrd->hnd", field, proj)[None] * 1.5
    q = k[:, :, -q_len:] + 0.1 * torch.randn(1, heads, q_len, dim, generator=gen)
    v = torch.randn(1, heads, k_len, dim, generator=gen)
    return q, k, v


def expand_tiles(block_map, q_len, k_len, bq, bk):
    return block_map.repeat_interleave(bq, -2).repeat_interleave(bk, -1)[..., :q_len, :k_len]


def rel_l1(a, b):
    return float((a - b).abs().sum() / b.abs().sum())


def test_all_blocks_kept_equals_dense_attention():
    """Edge tiles (lengths not multiples of the block sizes) included: topk=1 is dense attention."""
    q, k, v = random_qkv()
    for bk in (64, 128):
        out = block_sparse_attention(q, k, v, BlockSparseParams(topk=1.0, block_q=64, block_k=bk))
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_sparse_output_is_exact_attention_over_the_kept_tiles():
    """Dropped tiles are skipped exactly: same as dense SDPA with those tiles masked out."""
    q, k, v = structured_qkv()
    params = BlockSparseParams(topk=0.3, block_q=64, block_k=64, sink_tokens=64, keep_own_chunk=False)
    block_map = build_block_map(q, k, params)
    assert not block_map.all()
    allowed = expand_tiles(block_map, q.shape[-2], k.shape[-2], 64, 64)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(block_sparse_attention(q, k, v, params), reference, atol=1e-5, rtol=1e-5)


def test_mask_always_keeps_sink_and_own_chunk():
    q, k, v = structured_qkv(q_len=192, k_len=768)
    params = BlockSparseParams(topk=0.01, block_q=64, block_k=64, sink_tokens=100, keep_own_chunk=True)
    block_map = build_block_map(q, k, params)
    assert block_map[..., :2].all(), "sink: keys 0..99 lie in key blocks 0 and 1"
    assert block_map[..., (768 - 192) // 64 :].all(), "own chunk: the last 192 keys"
    assert not block_map[..., 2 : (768 - 192) // 64].all(), "a top-1% selection must drop middle blocks"


def test_mask_keeps_the_own_chunk_wherever_the_ring_cache_put_it():
    """LongLive's ring writes the current chunk into the oldest slot: its keys can sit mid-window."""
    q, k, v = structured_qkv(q_len=192, k_len=768)
    params = BlockSparseParams(topk=0.01, block_q=64, block_k=64, sink_tokens=64, keep_own_chunk=True)
    block_map = build_block_map(q, k, params, own_start=256)[0, 0]
    assert block_map[:, 0].all() and block_map[:, 4:7].all(), "sink block 0 and own keys 256..447"
    assert not block_map[:, 9:].all(), "the last keys are not special any more"
    allowed = expand_tiles(build_block_map(q, k, params, own_start=256), 192, 768, 64, 64)
    torch.testing.assert_close(
        block_sparse_attention(q, k, v, params, own_start=256),
        F.scaled_dot_product_attention(q, k, v, attn_mask=allowed),
        atol=1e-5,
        rtol=1e-5,
    )


def test_mask_keeps_the_diagonal_without_the_own_chunk():
    """Query i sits at key position k_len - q_len + i; its key block is kept even at tiny top-k."""
    q, k, v = structured_qkv(q_len=200, k_len=700)
    params = BlockSparseParams(topk=0.01, block_q=64, block_k=32, keep_own_chunk=False)
    block_map = build_block_map(q, k, params)[0, 0]
    for qb in range(block_map.shape[0]):
        first = (500 + qb * 64) // 32
        last = (500 + min((qb + 1) * 64, 200) - 1) // 32
        assert block_map[qb, first : last + 1].all(), f"query block {qb} lost its diagonal"
    assert block_map.float().mean() < 0.5


def test_more_top_k_keeps_a_superset_and_error_never_grows():
    q, k, v = structured_qkv()
    dense = F.scaled_dot_product_attention(q, k, v)
    previous_map, previous_error, previous_density = None, math.inf, 0.0
    for topk in (0.1, 0.2, 0.35, 0.5, 0.7, 1.0):
        params = BlockSparseParams(topk=topk, block_q=64, block_k=64, keep_own_chunk=False)
        block_map = build_block_map(q, k, params)
        density = block_map_density(block_map, q.shape[-2], k.shape[-2], params)
        error = rel_l1(block_sparse_attention(q, k, v, params), dense)
        if previous_map is not None:
            assert (block_map | previous_map).equal(block_map), f"top-k {topk} dropped a tile it kept before"
        assert density >= previous_density
        assert error <= previous_error + 1e-6, f"top-k {topk}: error {error} > {previous_error}"
        previous_map, previous_error, previous_density = block_map, error, density
    assert previous_density == 1.0 and previous_error < 1e-5


def test_higher_cdf_threshold_keeps_a_superset():
    q, k, v = structured_qkv()
    previous = None
    for cdf in (0.5, 0.8, 0.95, 1.0):
        params = BlockSparseParams(topk=None, cdf_threshold=cdf, block_q=64, block_k=64, keep_own_chunk=False)
        block_map = build_block_map(q, k, params)
        if previous is not None:
            assert (block_map | previous).equal(block_map)
        previous = block_map
    assert previous.all(), "cdf 1.0 covers all probability mass"


def test_query_block_that_is_not_self_similar_keeps_its_whole_row():
    """A pooled vector stands for its block only when the tokens agree (SpargeAttn's rule)."""
    gen = torch.Generator().manual_seed(5)
    directions = torch.randn(8, 32, generator=gen) * 3
    k = directions.repeat_interleave(64, 0)[None, None] + 0.1 * torch.randn(1, 1, 512, 32, generator=gen)
    incoherent = torch.randn(64, 32, generator=gen)  # block 0: tokens point every way
    coherent = directions[3] + 0.1 * torch.randn(64, 32, generator=gen)  # block 1: one direction
    q = torch.cat([incoherent, coherent])[None, None]
    params = BlockSparseParams(topk=0.05, sim_threshold=0.5, block_q=64, block_k=64, keep_own_chunk=False)
    block_map = build_block_map(q, k, params)[0, 0]
    assert block_map[0].all()
    assert block_map[1].sum() < 8


def test_block_map_builder_traces_as_one_graph():
    """No Python loop or data-dependent branch: torch.compile takes it without graph breaks."""
    q, k, _ = structured_qkv()
    params = BlockSparseParams(topk=0.35, block_q=64, block_k=64, sink_tokens=64)
    compiled = torch.compile(build_block_map, backend="eager", fullgraph=True)
    assert compiled(q, k, params).equal(build_block_map(q, k, params))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"topk": 0.0}, "topk must be in"),
        ({"topk": None}, "exactly one"),
        ({"topk": 0.5, "cdf_threshold": 0.9}, "exactly one"),
        ({"block_q": 48}, "power of two"),
        ({"sink_tokens": -1}, "sink_tokens"),
    ],
)
def test_bad_block_sparse_parameters_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockSparseParams(**kwargs)


@pytest.mark.slow
# torch's own inductor CPU path still calls torch.jit.script_method internally (torch 2.13).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_path_equals_the_unfused_path():
    """The GPU path (compiled mask builder, compiled FlexAttention visiting only the listed
    blocks with no mask function) keeps exactly the tiles the unfused path masks by function."""
    q, k, v = structured_qkv(q_len=128, k_len=384)
    params = BlockSparseParams(topk=0.3, block_q=64, block_k=64, sink_tokens=64, keep_own_chunk=False)
    eager = block_sparse_attention(q, k, v, params, compiled=False)
    fused = block_sparse_attention(q, k, v, params, compiled=True)
    torch.testing.assert_close(fused, eager, atol=1e-4, rtol=1e-4)  # fused kernel sums in another order
    assert not torch.allclose(eager, F.scaled_dot_product_attention(q, k, v), atol=1e-3)
