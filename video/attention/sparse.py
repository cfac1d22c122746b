"""Block-sparse attention following SpargeAttn's selection method, run on FlexAttention.

SpargeAttn (thu-ml, "SpargeAttention", 2025) predicts which (query block, key block) tiles
of the attention matrix matter from a cheap pooled estimate, then skips the rest:

1. Mean-pool Q in blocks of `block_q` tokens and K in blocks of `block_k` tokens (K first
   has its mean over all tokens removed, "smooth K": softmax per query row is unchanged by it).
2. Judge each block's self-similarity: the mean pairwise cosine of the block's tokens,
   |sum of unit vectors|^2 / n^2. A pooled vector only stands for its block when the tokens
   agree, so a query block that is not self-similar keeps its whole row and a key block that
   is not self-similar keeps its whole column (always computed, never skipped).
3. Score blocks with softmax(pooled_q . pooled_k / sqrt(d)) and keep per query block either
   the top `topk` fraction of key blocks or the fewest blocks whose probabilities add up to
   `cdf_threshold`.
4. Always keep what streaming video needs: the sink (the first `sink_tokens` keys), the
   query's own chunk (its own keys, by default the last `q_len`; `own_start` moves them
   since LongLive's ring cache may hold the current chunk anywhere) and the diagonal (the
   key blocks at the queries' own positions).

The mask is built with tensor ops only (no Python loop over blocks; `torch.compile` takes
it whole) and handed to FlexAttention as a `BlockMask` made by `BlockMask.from_kv_blocks`
(calling `create_block_mask` per step evaluates a mask function over every block and costs
milliseconds). Kept tiles are passed as *full* blocks, so the fused kernel never evaluates
a mask function inside them; for FlexAttention's unfused (eager / CPU) path, which honours
only the mask function and not the block list, the mask function encodes the same tiles.

SpargeAttn's second stage (skipping P.V inside a kept tile by a per-warp threshold) lives in
its CUDA kernel and has no FlexAttention equivalent; it is not reproduced here.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: SpargeAttn's defaults for the self-similarity threshold: permissive with top-k
#: (its `spas_sage2_attn_meansim_topk_cuda` uses -0.1), strict with the cdf rule (0.6).
DEFAULT_SIM_THRESHOLD_TOPK = -0.1
DEFAULT_SIM_THRESHOLD_CDF = 0.6


@dataclass(frozen=True)
class BlockSparseParams:
    """Settings of one block-sparse call; plain data so scripts can use it without pydantic.

    Exactly one of `topk` (fraction of key blocks kept per query block, 0 < topk <= 1) and
    `cdf_threshold` (cumulative pooled probability to cover, 0 < c <= 1) decides selection.
    """

    topk: float | None = 0.5
    cdf_threshold: float | None = None
    sim_threshold: float | None = None  # None: SpargeAttn's default for the rule in use
    block_q: int = 128
    block_k: int = 128
    sink_tokens: int = 0
    keep_own_chunk: bool = True  # keep all of the queries' own keys (the chunk being denoised)
    keep_diagonal: bool = True
    # Kept tiles as FlexAttention "full" blocks (the kernel skips the mask call) or "partial"
    # ones. None: full on CUDA; partial elsewhere (torch 2.13's CPU inductor fails to compile
    # full-only masks: "kv_indices was not declared").
    full_blocks: bool | None = None

    def __post_init__(self) -> None:
        if (self.topk is None) == (self.cdf_threshold is None):
            raise ValueError("set exactly one of topk and cdf_threshold")
        if self.topk is not None and not 0.0 < self.topk <= 1.0:
            raise ValueError(f"topk must be in (0, 1], got {self.topk}")
        if self.cdf_threshold is not None and not 0.0 < self.cdf_threshold <= 1.0:
            raise ValueError(f"cdf_threshold must be in (0, 1], got {self.cdf_threshold}")
        for name in ("block_q", "block_k"):
            size = getattr(self, name)
            if size < 16 or size & (size - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {size}")
        if self.sink_tokens < 0:
            raise ValueError(f"sink_tokens must be >= 0, got {self.sink_tokens}")

    @property
    def similarity_threshold(self) -> float:
        if self.sim_threshold is not None:
            return self.sim_threshold
        return DEFAULT_SIM_THRESHOLD_TOPK if self.topk is not None else DEFAULT_SIM_THRESHOLD_CDF


def _pool_and_similarity(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of `block` tokens: the mean vector and the mean pairwise cosine similarity.

    x: (B, H, N, D). The last block may be short; padding contributes nothing and the means
    divide by the real token count.
    """
    b, h, n, d = x.shape
    nblocks = -(-n // block)
    pad = nblocks * block - n
    xf = x.float()
    if pad:
        xf = F.pad(xf, (0, 0, 0, pad))
    xb = xf.view(b, h, nblocks, block, d)
    counts = torch.full((nblocks,), float(block), device=x.device)
    counts[-1] = float(block - pad)
    pooled = xb.sum(dim=3) / counts[:, None]
    unit = F.normalize(xb, dim=-1)  # zero padding stays zero
    similarity = unit.sum(dim=3).square().sum(-1) / counts.square()
    return pooled, similarity


def _forced_blocks(
    q_len: int, k_len: int, params: BlockSparseParams, device: torch.device, own_start: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key blocks every query block keeps: (per key block [nk], per tile [nq, nk]) bool.

    The queries' own keys are keys own_start .. own_start + q_len - 1 (default: the last q_len).
    """
    bq, bk = params.block_q, params.block_k
    nq, nk = -(-q_len // bq), -(-k_len // bk)
    kb = torch.arange(nk, device=device)
    columns = (
        kb < -(-params.sink_tokens // bk) if params.sink_tokens else torch.zeros_like(kb, dtype=torch.bool)
    )
    offset = k_len - q_len if own_start is None else own_start  # query i sits at key offset + i
    fits = 0 <= offset and offset + q_len <= k_len
    if params.keep_own_chunk and fits:
        columns = columns | ((kb >= offset // bk) & (kb <= (offset + q_len - 1) // bk))
    tiles = torch.zeros(nq, nk, dtype=torch.bool, device=device)
    if params.keep_diagonal and fits:
        qb = torch.arange(nq, device=device)
        first = (offset + qb * bq) // bk
        last = (offset + torch.clamp((qb + 1) * bq, max=q_len) - 1) // bk
        tiles = (kb[None, :] >= first[:, None]) & (kb[None, :] <= last[:, None])
    return columns, tiles


def build_block_map(
    q: torch.Tensor, k: torch.Tensor, params: BlockSparseParams, own_start: int | None = None
) -> torch.Tensor:
    """The kept tiles, bool (B, H, ceil(Nq/block_q), ceil(Nk/block_k)). Tensor ops only.

    `own_start`: index of the queries' own first key (the engine's cache may hold the current
    chunk anywhere in its ring); None means the last q_len keys.
    """
    q_len, k_len = q.shape[-2], k.shape[-2]
    k_smooth = k - k.mean(dim=-2, keepdim=True)
    pooled_q, sim_q = _pool_and_similarity(q, params.block_q)
    pooled_k, sim_k = _pool_and_similarity(k_smooth, params.block_k)
    threshold = params.similarity_threshold
    scores = (pooled_q @ pooled_k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    probs = scores.softmax(dim=-1)
    nk = probs.shape[-1]
    order = probs.argsort(dim=-1, descending=True)
    if params.topk is not None:
        count = max(1, math.ceil(params.topk * nk - 1e-9))
        keep_sorted = (torch.arange(nk, device=q.device) < count).expand_as(probs)
    else:
        cdf = probs.gather(-1, order).cumsum(dim=-1)
        # keep every block until the cumulative mass reaches the threshold, that one included
        keep_sorted = (cdf - probs.gather(-1, order)) < params.cdf_threshold
    selected = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    columns, tiles = _forced_blocks(q_len, k_len, params, q.device, own_start)
    dissimilar_rows = (sim_q <= threshold)[..., :, None]
    dissimilar_cols = (sim_k <= threshold)[..., None, :]
    return selected | columns | tiles | dissimilar_rows | dissimilar_cols


def block_map_to_block_mask(
    block_map: torch.Tensor, q_len: int, k_len: int, params: BlockSparseParams, *, for_compiled: bool = False
):
    """A FlexAttention `BlockMask` whose full blocks are exactly the kept tiles.

    The fused (compiled) kernel visits only the listed full blocks and never calls the mask
    function, so there it is the shared `noop_mask` (a new closure per call could make
    torch.compile re-trace). The unfused path ignores block sparsity and applies only the
    mask function, so there it looks the tile up in `block_map`. Same result either way.
    """
    from torch.nn.attention.flex_attention import BlockMask, noop_mask

    nk = block_map.shape[-1]
    index = torch.arange(nk, device=block_map.device, dtype=torch.int32)
    counts = block_map.sum(dim=-1, dtype=torch.int32)
    # kept block indices first, ascending; the rest follow and are ignored past `counts`
    indices = torch.where(block_map, index, index + nk).sort(dim=-1).values.remainder_(nk)
    bq, bk = params.block_q, params.block_k
    if for_compiled:
        mask_mod = noop_mask
    else:
        tiles = block_map

        def mask_mod(b, h, q_idx, kv_idx):
            return tiles[b, h, q_idx // bq, kv_idx // bk]

    extra = {"compute_q_blocks": False} if _COMPUTE_Q_BLOCKS else {}
    if _SEQ_LENGTHS:
        extra["seq_lengths"] = (q_len, k_len)
    full = params.full_blocks if params.full_blocks is not None else block_map.is_cuda
    if full:
        blocks = (torch.zeros_like(counts), indices, counts, indices)
    else:  # every kept tile goes through the (trivial on the compiled path) mask function
        blocks = (counts, indices, None, None)
    return BlockMask.from_kv_blocks(
        *blocks,
        BLOCK_SIZE=(bq, bk),
        mask_mod=mask_mod,
        **extra,
    )


def _from_kv_blocks_takes(name: str) -> bool:
    # Probed once at import (plain bools, so torch.compile traces no cached call):
    # `seq_lengths` (non-multiple lengths) and `compute_q_blocks` (skip the transposed index,
    # which only the backward pass needs) arrived in later torch releases than BlockMask.
    import inspect

    try:
        from torch.nn.attention.flex_attention import BlockMask
    except ImportError:
        return False
    return name in inspect.signature(BlockMask.from_kv_blocks).parameters


_COMPUTE_Q_BLOCKS = _from_kv_blocks_takes("compute_q_blocks")
_SEQ_LENGTHS = _from_kv_blocks_takes("seq_lengths")


_BUILDER: list = []  # the compiled mask builder, or the eager one after a compile failure


def _build_compiled(q: torch.Tensor, k: torch.Tensor, params: BlockSparseParams, own_start: int | None):
    """`build_block_map` fused by torch.compile: eager it is ~20 small kernels reading K several
    times, a visible share of a ~1 ms attention call at LongLive's size. A compile failure
    logs one line and keeps the eager builder (same result, slower)."""
    if not _BUILDER:
        _raise_recompile_limit()
        _BUILDER.append(torch.compile(build_block_map, dynamic=False))
    try:
        return _BUILDER[0](q, k, params, own_start)
    except Exception as exc:  # inductor/triton failures vary by version: never lose the call
        if _BUILDER[0] is build_block_map:
            raise
        logging.getLogger(__name__).warning(
            "compiling the block-mask builder failed (%s); building masks eagerly", type(exc).__name__
        )
        _BUILDER[0] = build_block_map
        return build_block_map(q, k, params, own_start)


def _raise_recompile_limit() -> None:
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))
            break


@functools.cache
def _compiled_flex():
    """flex_attention compiled once per process, one graph per (shape, block size).

    LongLive meets several key lengths while its window fills, plus the self-check shape;
    dynamo's default of 8 graphs per function could run out and silently fall back to the
    unfused path, so the limit is raised here, at first use (never at import).
    """
    from torch.nn.attention.flex_attention import flex_attention

    _raise_recompile_limit()
    return torch.compile(flex_attention, dynamic=False)


def flex_block_sparse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask, *, compiled: bool | None = None
):
    """FlexAttention over `block_mask`; compiled (fused kernel) on CUDA, unfused elsewhere.

    The unfused path materialises the whole score matrix: fine for CPU tests, never fast.
    """
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():  # inside the engine's compiled graph: fused by the caller's compile
        return flex_attention(q, k, v, block_mask=block_mask)
    if compiled is None:
        compiled = q.is_cuda
    if compiled:
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    with warnings.catch_warnings():
        # Expected on CPU: torch warns that the unfused implementation is slow.
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    params: BlockSparseParams,
    *,
    compiled: bool | None = None,
    return_density: bool = False,
    own_start: int | None = None,
):
    """Attention of q over k/v that computes only the tiles SpargeAttn's rule keeps.

    With every block kept (topk=1) this equals dense attention up to float rounding.
    `own_start` locates the queries' own keys (see `build_block_map`).
    """
    if compiled is None:
        compiled = q.is_cuda
    if compiled and not torch.compiler.is_compiling():
        block_map = _build_compiled(q, k, params, own_start)
    else:
        block_map = build_block_map(q, k, params, own_start)
    mask = block_map_to_block_mask(block_map, q.shape[-2], k.shape[-2], params, for_compiled=compiled)
    out = flex_block_sparse(q, k, v, mask, compiled=compiled)
    if return_density:
        return out, block_map_density(block_map, q.shape[-2], k.shape[-2], params)
    return out


def block_map_density(block_map: torch.Tensor, q_len: int, k_len: int, params: BlockSparseParams) -> float:
    """Fraction of the q_len x k_len score matrix inside kept tiles (short edge tiles weighted)."""
    bq, bk = params.block_q, params.block_k
    nq, nk = block_map.shape[-2:]
    rows = torch.full((nq,), float(bq), device=block_map.device)
    rows[-1] = q_len - (nq - 1) * bq
    cols = torch.full((nk,), float(bk), device=block_map.device)
    cols[-1] = k_len - (nk - 1) * bk
    area = (block_map.float() * rows[:, None] * cols[None, :]).sum(dim=(-1, -2))
    return float((area / (q_len * k_len)).mean())
