"""The causal Wan DiT that LongLive runs, written for streaming inference.

Reads top to bottom (STYLE.md house rule 1): precision policy, timestep embedding, RoPE,
KV window, attention, block, head, model. Module names are the checkpoint's exactly
(`blocks.N.self_attn.q`, `ffn.0`, `modulation`, `head.head`...), so the released weights
load with `strict=True` after `checkpoint.strip_wrapper_prefix`.

Streaming design (what differs from the reference code, and why):
- The KV cache is one preallocated buffer per layer, `local_attn_size` latent frames long:
  `sink_size` frames that are written once and kept, then a ring of chunk slots for the
  rolling window. A new chunk overwrites the oldest ring slot in place (`index_copy_`): no
  clone of the cache per layer, no `torch.cat` growth.
- RoPE positions are relative to the window: sink frames at 0..sink-1, then the window's
  frames in age order, the current chunk last. Keys are cached rotated to that position;
  when the ring evicts, the kept chunks' keys are rotated one chunk earlier, once per
  chunk. Positions never exceed `local_attn_size - 1`, so a session has no 1024-frame
  limit (the reference's `freqs` table) and never hard-cuts. Distances between window
  frames equal the reference's; only the sink's distance is compressed (docs/longlive.md).
- RoPE tables are float32 and built once in `setup_caches` (the reference uses float64
  complex numbers on every call).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionRouter, DenseRouter, dense_attention
from .config import WanConfig

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- precision policy

#: Parameters whose name contains one of these stay float32 when the model is cast to
#: bf16/fp16: the timestep path and the adaLN modulation feed every block's scale/shift,
#: where bf16 rounding visibly shifts colours. Norms compute in float32 regardless.
KEEP_FP32_MODULES: list[str] = ["time_embedding", "time_projection", "modulation"]


def cast_for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast `model` to `dtype`, except parameters named in `KEEP_FP32_MODULES`."""
    for name, param in model.named_parameters():
        keep = any(part in name for part in KEEP_FP32_MODULES)
        param.data = param.data.to(torch.float32 if keep else dtype)
    return model


# --------------------------------------------------------------------------- timestep embedding


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Wan's sinusoidal timestep embedding, [cos | sin], computed in float32."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float().reshape(-1, 1) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


# --------------------------------------------------------------------------- RoPE


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Rotary pairs given to the (time, height, width) axes, as in Wan: 22/21/21 for 128."""
    pairs = head_dim // 2
    return pairs - 2 * (pairs // 3), pairs // 3, pairs // 3


def rope_angles(
    cfg: WanConfig, frame_pos: torch.Tensor, grid_h: int, grid_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables, float32, shape (len(frame_pos) * grid_h * grid_w, head_dim // 2).

    Token order is (frame, row, column), the patch order of `patch_embedding`. Each axis
    uses frequencies theta^(-2i/d_axis) with d_axis = 2 * its pair count (Wan's rope_params).
    """
    device = frame_pos.device
    dt, dh, dw = rope_axis_dims(cfg.head_dim)

    def axis(pos: torch.Tensor, pairs: int) -> torch.Tensor:
        inv = cfg.rope_theta ** (-torch.arange(pairs, device=device, dtype=torch.float64) * 2 / (2 * pairs))
        return (pos.to(torch.float64)[:, None] * inv[None, :]).float()

    f = axis(frame_pos, dt)  # (F, dt)
    h = axis(torch.arange(grid_h, device=device), dh)
    w = axis(torch.arange(grid_w, device=device), dw)
    n_f = frame_pos.numel()
    angles = torch.cat(
        [
            f[:, None, None, :].expand(n_f, grid_h, grid_w, dt),
            h[None, :, None, :].expand(n_f, grid_h, grid_w, dh),
            w[None, None, :, :].expand(n_f, grid_h, grid_w, dw),
        ],
        dim=-1,
    ).reshape(n_f * grid_h * grid_w, dt + dh + dw)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x (B, H, N, D) by angles (N, D/2); float32 maths, x's dtype out."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).type_as(x)


# --------------------------------------------------------------------------- KV window


@dataclass
class ChunkPlan:
    """Where one chunk goes in the KV window and which positions it sees (built once per chunk).

    `write_index` are token rows of the cache the chunk's keys/values overwrite. The chunk
    attends to the first `n_valid` rows of the cache (its own included) or, when
    `read_index` is set (re-cache, where stale slots sit in between), to those rows.
    cos/sin rotate the chunk's queries and keys to its block-relative position.
    """

    slot: int
    own_start: int  # row of the chunk's first key among the keys read (for sparse routers)
    write_index: torch.Tensor  # (chunk_tokens,) int64
    n_valid: int
    read_index: torch.Tensor | None
    q_cos: torch.Tensor
    q_sin: torch.Tensor


class KVWindow:
    """Slot bookkeeping for the sink + ring cache (host-side ints; small tensors per chunk).

    Chunk slots 0..sink_chunks-1 hold the sink; the rest is a ring of
    `window_frames / chunk_frames` chunk slots. Chunks fill the sink first, then the ring
    in order, so while streaming the valid part of the cache is a prefix; once full, the
    oldest ring slot is reused. Nothing here reads device memory (no host syncs).

    Keys are cached already rotated to their block-relative position: the sink at 0..,
    then the ring oldest first. When a full ring drops its oldest chunk, every kept ring
    chunk moves one chunk earlier, so its keys are rotated back by one chunk of frames
    (`shift_rows`, applied by `CausalWanModel.begin_chunk`), once per chunk.
    """

    def __init__(self, cfg: WanConfig, grid_h: int, grid_w: int, device: torch.device) -> None:
        self.cfg = cfg
        self.tokens_per_frame = grid_h * grid_w
        self.chunk = cfg.num_frame_per_block
        self.sink_chunks = cfg.sink_size // self.chunk
        self.ring_chunks = cfg.window_frames // self.chunk
        assert self.ring_chunks >= 1, "the window must hold the current chunk"
        # RoPE by frame position 0..local_attn_size-1, token-major, float32, built once.
        positions = torch.arange(cfg.local_attn_size, device=device)
        cos, sin = rope_angles(cfg, positions, grid_h, grid_w)
        self.cos = cos.view(cfg.local_attn_size, self.tokens_per_frame, -1)
        self.sin = sin.view(cfg.local_attn_size, self.tokens_per_frame, -1)
        # Rotation by minus one chunk of frames (time axis only), for the ring shift.
        self.shift_cos, self.shift_sin = rope_angles(cfg, torch.tensor([-self.chunk], device=device), 1, 1)
        self.device = device
        self._plans: dict[tuple[int, tuple[int, ...]], ChunkPlan] = {}
        self._shifts: dict[tuple[int, ...], torch.Tensor] = {}
        self.reset()

    def reset(self) -> None:
        self.chunks_written = 0  # chunks committed since the session began
        self.ring_age: list[int] = []  # ring chunk slots (absolute slot numbers), oldest first

    @property
    def sink_full(self) -> bool:
        return self.chunks_written >= self.sink_chunks

    def _rows(self, slots: list[int]) -> list[int]:
        rows_per_slot = self.chunk * self.tokens_per_frame
        return [r for s in slots for r in range(s * rows_per_slot, (s + 1) * rows_per_slot)]

    def _plan(self, slot: int, context: list[int]) -> ChunkPlan:
        """Plan a chunk written to `slot` that attends to `context` slots and itself.

        Positions are block-relative: context slots in the order given (sink first, then
        the window oldest first), the chunk itself last.
        """
        key = (slot, tuple(context))
        if key not in self._plans:  # few distinct plans: build each once (no copies per chunk)
            self._plans[key] = self._build_plan(slot, context)
        return self._plans[key]

    def _build_plan(self, slot: int, context: list[int]) -> ChunkPlan:
        order = context + [slot]
        rank = {s: i for i, s in enumerate(order)}
        read_slots = sorted(order)
        prefix = read_slots == list(range(len(read_slots)))
        c, L = self.chunk, self.tokens_per_frame
        own = torch.arange(rank[slot] * c, rank[slot] * c + c, device=self.device)
        n = len(read_slots) * c * L
        return ChunkPlan(
            slot=slot,
            own_start=read_slots.index(slot) * c * L,
            write_index=torch.tensor(self._rows([slot]), device=self.device),
            n_valid=n,
            read_index=None if prefix else torch.tensor(self._rows(read_slots), device=self.device),
            q_cos=self.cos[own].reshape(c * L, -1),
            q_sin=self.sin[own].reshape(c * L, -1),
        )

    def next_plan(self) -> ChunkPlan:
        """Plan for the next new chunk (call `commit` once its clean refresh pass has run)."""
        if not self.sink_full:
            return self._plan(self.chunks_written, list(range(self.chunks_written)))
        sinks = list(range(self.sink_chunks))
        if len(self.ring_age) < self.ring_chunks:
            return self._plan(self.sink_chunks + len(self.ring_age), sinks + self.ring_age)
        return self._plan(self.ring_age[0], sinks + self.ring_age[1:])

    def shift_rows(self) -> torch.Tensor | None:
        """Cache rows whose keys must move one chunk earlier before the next new chunk
        (the kept ring chunks when a full ring evicts), or None."""
        if not self.sink_full or len(self.ring_age) < self.ring_chunks or self.ring_chunks < 2:
            return None
        kept = tuple(self.ring_age[1:])
        if kept not in self._shifts:
            self._shifts[kept] = torch.tensor(self._rows(list(kept)), device=self.device)
        return self._shifts[kept]

    def commit(self, plan: ChunkPlan) -> None:
        """Record that the chunk planned by `plan` is now in the cache."""
        if plan.slot >= self.sink_chunks:
            if plan.slot in self.ring_age:
                self.ring_age.remove(plan.slot)
            self.ring_age.append(plan.slot)
        self.chunks_written += 1

    def recache_plans(self) -> list[ChunkPlan]:
        """Plans rewriting each ring chunk (oldest first) while the sink is kept: the re-cache.

        Chunk i attends to the sink and the ring chunks before it, as when it was made.
        """
        sinks = list(range(min(self.sink_chunks, self.chunks_written)))
        return [self._plan(slot, sinks + self.ring_age[:i]) for i, slot in enumerate(self.ring_age)]


# --------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """Wan's RMSNorm over the full width (before the head split), float32 inside."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in float32 (the residual stream's dtype)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class _AttentionWeights(nn.Module):
    """The weights both attentions share, named as in the checkpoint: q, k, v, o, norm_q, norm_k."""

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, cfg.eps)
        self.norm_k = RMSNorm(dim, cfg.eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)


class SelfAttention(_AttentionWeights):
    """Causal self-attention over the KV window (or over a whole sequence, for the reference)."""

    def fuse_qkv(self) -> None:
        """Replace q, k, v by one linear `qkv` with their weights stacked (same maths, one GEMM
        of 3×dim outputs instead of three of dim: fuller waves on the GPU, fewer launches).
        After loading and any LoRA merge: the checkpoint and LoRA name q, k, v."""
        if hasattr(self, "qkv"):
            return
        parts = (self.q, self.k, self.v)
        fused = nn.Linear(self.q.in_features, 3 * self.q.out_features, device=self.q.weight.device,
                          dtype=self.q.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([p.weight for p in parts]))
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
        self.qkv = fused
        del self.q, self.k, self.v

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hasattr(self, "qkv"):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        return self._split(self.norm_q(q)), self._split(self.norm_k(k)), self._split(v)

    def write_kv(self, x, cache_k, cache_v, plan: ChunkPlan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project x, write its rotated keys and values to the plan's cache rows; return q
        (rotated) and the keys/values the chunk attends to."""
        q, k, v = self.project(x)
        q = apply_rope(q, plan.q_cos, plan.q_sin).to(cache_k.dtype)
        cache_k.index_copy_(2, plan.write_index, apply_rope(k, plan.q_cos, plan.q_sin).to(cache_k.dtype))
        cache_v.index_copy_(2, plan.write_index, v.to(cache_v.dtype))
        return q, cache_k, cache_v

    def forward_cached(self, x, cache_k, cache_v, plan: ChunkPlan, attn_fn) -> torch.Tensor:
        q, cache_k, cache_v = self.write_kv(x, cache_k, cache_v, plan)
        if plan.read_index is None:
            keys, values = cache_k[:, :, : plan.n_valid], cache_v[:, :, : plan.n_valid]
        else:
            keys, values = cache_k.index_select(2, plan.read_index), cache_v.index_select(2, plan.read_index)
        out = attn_fn(q, keys, values)
        return self.o(out.transpose(1, 2).flatten(2).to(x.dtype))

    def forward_full(self, x, cos, sin, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self.project(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(out.transpose(1, 2).flatten(2))


class CrossAttention(_AttentionWeights):
    """Attention from video tokens to the (padded) text tokens; K/V cached per prompt."""

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(self.norm_k(self.k(context))), self._split(self.v(context))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._split(self.norm_q(self.q(x)))
        out = dense_attention(q, k, v)  # cuDNN first: plain SDPA picked FlashAttention-2 here
        return self.o(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """One Wan block: adaLN-modulated self-attention, cross-attention, FFN.

    The residual stream `x` is float32 (as in the reference, where the gated adds run under
    float32 autocast); linear layers see it cast to the weights' dtype.
    """

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = (
            LayerNorm(dim, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def _modulation(self, e: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(shift1, scale1, gate1, shift2, scale2, gate2), each (B, Te, dim) float32."""
        return (self.modulation.float().unsqueeze(1) + e).unbind(2)

    @staticmethod
    def _modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        te = shift.shape[1]
        return (h.unflatten(1, (te, -1)) * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)

    @staticmethod
    def _gated(y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        te = gate.shape[1]
        return (y.float().unflatten(1, (te, -1)) * gate[:, :, None]).flatten(1, 2)

    def _after_self_attn(self, x, y, mods, text_k, text_v) -> torch.Tensor:
        dtype = self.ffn[0].weight.dtype
        x = x + self._gated(y, mods[2])
        x = x + self.cross_attn(self.norm3(x).to(dtype), text_k, text_v).float()
        y = self.ffn(self._modulate(self.norm2(x), mods[3], mods[4]).to(dtype))
        return x + self._gated(y, mods[5])

    def _attn_input(self, x: torch.Tensor, e: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The six modulations, and the self-attention's input: norm1(x) modulated, in the
        linears' dtype."""
        mods = self._modulation(e)
        return mods, self._modulate(self.norm1(x), mods[0], mods[1]).to(self.ffn[0].weight.dtype)

    def forward_stream(self, x, e, text_k, text_v, cache_k, cache_v, plan: ChunkPlan, attn_fn) -> torch.Tensor:
        """x (B, N, dim) float32; e (B, Te, 6, dim) float32, N divisible by Te. Writes K/V."""
        mods, h = self._attn_input(x, e)
        y = self.self_attn.forward_cached(h, cache_k, cache_v, plan, attn_fn)
        return self._after_self_attn(x, y, mods, text_k, text_v)

    def write_kv_stream(self, x, e, cache_k, cache_v, plan: ChunkPlan) -> None:
        """Only what `forward_stream` writes to the cache: the last block of a refresh pass,
        whose output nothing reads (saves one block's attention, cross-attention and FFN)."""
        self.self_attn.write_kv(self._attn_input(x, e)[1], cache_k, cache_v, plan)

    def forward_full(self, x, e, text_k, text_v, cos, sin, mask) -> torch.Tensor:
        mods, h = self._attn_input(x, e)
        y = self.self_attn.forward_full(h, cos, sin, mask)
        return self._after_self_attn(x, y, mods, text_k, text_v)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x (B, N, dim) float32; e (B, Te, dim) float32 (the time embedding, not projected)."""
        te = e.shape[1]
        shift, scale = (self.modulation.float().unsqueeze(1) + e.unsqueeze(2)).unbind(2)
        h = self.norm(x).unflatten(1, (te, -1)) * (1 + scale[:, :, None]) + shift[:, :, None]
        return self.head(h.flatten(1, 2).to(self.head.weight.dtype))


@dataclass
class _CapturedPass:
    """One recorded pass: copy inputs into `x`/`t`, replay, read `out`. Holds `plan` so its
    id (part of the key) is never reused."""

    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    t: torch.Tensor
    out: torch.Tensor | None  # None for a refresh pass
    plan: ChunkPlan


# --------------------------------------------------------------------------- model


class CausalWanModel(nn.Module):
    """The LongLive generator. `forward_chunk` streams; `forward_full` is the reference path."""

    def __init__(self, cfg: WanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.router: AttentionRouter = DenseRouter()
        self.window: KVWindow | None = None
        self._cache_key: tuple | None = None  # (batch, grid, dtype, device) of the buffers
        self._graphs: dict[tuple, _CapturedPass] | None = None  # see use_cuda_graphs
        self._graph_pool = None

    def set_router(self, router: AttentionRouter) -> None:
        """Switch attention routing (dense / sparse...), e.g. from `video.attention.make_router`."""
        self.router = router

    # ---- caches ---------------------------------------------------------------------------

    def setup_caches(self, batch: int, latent_h: int, latent_w: int, dtype: torch.dtype | None = None) -> None:
        """Allocate the KV window, text K/V buffers and RoPE tables once for a frame size.

        Called again with the same size, batch and dtype (a new session), it only empties the
        cache: the buffers, the window's chunk plans and any captured CUDA graphs are kept.
        """
        cfg = self.cfg
        device = self.patch_embedding.weight.device
        dtype = dtype or self.blocks[0].ffn[0].weight.dtype
        _, ph, pw = cfg.patch_size
        self.grid = (latent_h // ph, latent_w // pw)
        key = (batch, self.grid, dtype, device)
        if self.window is not None and key == self._cache_key:
            self.reset_caches()
            return
        self._cache_key = key
        tokens = cfg.local_attn_size * self.grid[0] * self.grid[1]
        shape = (cfg.num_layers, batch, cfg.num_heads, tokens, cfg.head_dim)
        text_shape = (cfg.num_layers, batch, cfg.num_heads, cfg.text_len, cfg.head_dim)
        # Plain attributes, not buffers: they are session state, never saved or loaded.
        self.cache_k = torch.zeros(shape, device=device, dtype=dtype)
        self.cache_v = torch.zeros(shape, device=device, dtype=dtype)
        self.text_k = torch.zeros(text_shape, device=device, dtype=dtype)
        self.text_v = torch.zeros(text_shape, device=device, dtype=dtype)
        self.window = KVWindow(cfg, *self.grid, device)
        self.drop_cuda_graphs()  # they read the old buffers

    @torch.no_grad()
    def begin_chunk(self) -> ChunkPlan:
        """Plan the next new chunk; if the ring evicts, move the kept chunks' keys one chunk
        earlier first (one rotation of 2 chunks' keys per layer, once per chunk)."""
        assert self.window is not None, "setup_caches first"
        plan = self.window.next_plan()
        rows = self.window.shift_rows()
        if rows is not None:
            # A shift along time rotates only the time-axis pairs (the first ones, see
            # `rope_angles`), and all layers move together: one batched op on a third of
            # each key, not 30 full-width passes (14 ms → about 1 ms per chunk on H100).
            n_time = 2 * rope_axis_dims(self.cfg.head_dim)[0]
            cos, sin = self.window.shift_cos[:, : n_time // 2], self.window.shift_sin[:, : n_time // 2]
            time_part = self.cache_k[..., :n_time]
            time_part.index_copy_(3, rows, apply_rope(time_part.index_select(3, rows), cos, sin))
        return plan

    def reset_caches(self) -> None:
        assert self.window is not None, "setup_caches first"
        self.cache_k.zero_()
        self.cache_v.zero_()
        self.window.reset()

    # ---- embeddings -----------------------------------------------------------------------

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """(B, n<=text_len, text_dim) → (B, text_len, dim), zero-padded as the reference does."""
        pad = self.cfg.text_len - context.shape[1]
        if pad < 0:
            raise ValueError(f"text has {context.shape[1]} tokens; the model takes at most {self.cfg.text_len}")
        context = F.pad(context, (0, 0, 0, pad))
        w = self.text_embedding[0].weight
        return self.text_embedding(context.to(w.dtype))

    @torch.no_grad()
    def set_prompt(self, context: torch.Tensor) -> None:
        """Compute every layer's cross-attention K/V for this prompt, in place."""
        ctx = self.embed_text(context)
        for i, block in enumerate(self.blocks):
            k, v = block.cross_attn.text_kv(ctx)
            self.text_k[i].copy_(k)
            self.text_v[i].copy_(v)

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t (B, Te) → e (B, Te, dim), e0 (B, Te, 6, dim), float32."""
        b, te = t.shape
        w = self.time_embedding[0].weight
        e = self.time_embedding(sinusoidal_embedding(self.cfg.freq_dim, t).to(w.dtype)).float()
        e0 = self.time_projection(e.to(self.time_projection[1].weight.dtype)).float()
        return e.view(b, te, -1), e0.view(b, te, 6, self.cfg.dim)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) latents → (B, F*h*w, dim) float32 tokens."""
        w = self.patch_embedding.weight
        return self.patch_embedding(x.to(w.dtype)).flatten(2).transpose(1, 2).float()

    def unpatchify(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, F*h*w, pt*ph*pw*C) → (B, C, F*pt, h*ph, w*pw)."""
        pt, ph, pw = self.cfg.patch_size
        gh, gw = self.grid
        b = x.shape[0]
        x = x.view(b, frames, gh, gw, pt, ph, pw, self.cfg.out_dim)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.cfg.out_dim, frames * pt, gh * ph, gw * pw)

    # ---- streaming ------------------------------------------------------------------------

    def forward_chunk(self, x: torch.Tensor, t: torch.Tensor, plan: ChunkPlan, *, refresh: bool = False,
                      timestep_hint: float = 0.0) -> torch.Tensor | None:
        """Flow prediction for one chunk (B, C, f, H, W) at timestep t (B,), writing its K/V.

        The chunk's keys/values go into the rows named by `plan`; a later call with the same
        plan (the next denoising step, then the clean refresh pass) overwrites them.
        `refresh`: the clean pass, run only for the K/V it writes: returns None, and the last
        block stops once its K/V are written.
        `timestep_hint` is a host float for the attention router, which is asked here,
        outside the compiled region, so the compiled graph never specialises on floats.
        """
        if hasattr(self.router, "set_query_position"):  # ring cache: own keys are not always last
            self.router.set_query_position(plan.own_start)
        attn_fns = tuple(self.router.select(i, timestep_hint, refresh) for i in range(len(self.blocks)))
        if self._graphs is not None and x.is_cuda and isinstance(self.router, DenseRouter):
            return self._replay(x, t, plan, attn_fns, refresh)
        return self._chunk_impl(x, t, plan, attn_fns, refresh)

    def _chunk_eager(self, x: torch.Tensor, t: torch.Tensor, plan: ChunkPlan, attn_fns: tuple,
                     refresh: bool = False) -> torch.Tensor | None:
        frames = x.shape[2]
        tokens = self.patchify(x)
        e, e0 = self.embed_time(t[:, None])
        block_fn = self._block_fn
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if refresh and i == last:
                self._kv_fn(block, tokens, e0, self.cache_k[i], self.cache_v[i], plan)
                return None
            tokens = block_fn(
                block, tokens, e0, self.text_k[i], self.text_v[i], self.cache_k[i], self.cache_v[i], plan, attn_fns[i]
            )
        return self.unpatchify(self.head(tokens, e), frames).float()

    _chunk_impl = _chunk_eager
    _block_fn = staticmethod(Block.forward_stream)
    _kv_fn = staticmethod(Block.write_kv_stream)

    def compile(
        self, mode: str | None = None, *, scope: str = "blocks", backend: str = "inductor", fullgraph: bool = False,
        options: dict | None = None,
    ) -> None:
        """torch.compile the streaming path (an explicit call: importing compiles nothing).

        scope "blocks" (regional compilation) compiles one block's function, reused by all
        30 blocks: compile time is one block's, per distinct cache fill level (the window's
        warm-up chunks and the re-cache reads). scope "model" compiles the whole per-chunk
        forward (one graph per fill level; longer to compile, fewer launches).
        mode: None (inductor default), "max-autotune-no-cudagraphs", "reduce-overhead"; or
        `options`, Inductor settings instead of a mode (e.g. {"triton.multi_kernel": 1}).
        `backend`/`fullgraph` are torch.compile's (tests trace with backend "eager",
        fullgraph=True to prove the block has no graph breaks without paying for codegen).
        """
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        if scope == "blocks":
            self._block_fn, self._kv_fn = (
                torch.compile(fn, mode=mode, dynamic=False, backend=backend, fullgraph=fullgraph, options=options)
                for fn in (Block.forward_stream, Block.write_kv_stream)
            )
        elif scope == "model":
            self._chunk_impl = torch.compile(
                self._chunk_eager, mode=mode, dynamic=False, backend=backend, fullgraph=fullgraph, options=options
            )
        else:
            raise ValueError(f"compile scope must be 'blocks' or 'model', got {scope!r}")
        self.drop_cuda_graphs()  # captured with the old code

    def fuse_qkv(self) -> None:
        """Stack every block's q/k/v into one linear (`SelfAttention.fuse_qkv`): same outputs,
        one GEMM instead of three per block and pass. After loading and any LoRA merge."""
        for block in self.blocks:
            block.self_attn.fuse_qkv()
        self.drop_cuda_graphs()

    # ---- CUDA graphs ----------------------------------------------------------------------

    def use_cuda_graphs(self, enabled: bool = True) -> None:
        """Replay each distinct pass as one CUDA graph (on a CUDA device, with dense attention).

        Why: a pass is ~1,100 kernel launches, a re-cache three passes. The GPU time of a chunk
        hardly changes (480×832 on an H100: 297.6 vs 299.3 ms), but the host's does: after a
        chunk's frames are on the host, `ChunkPipeline` still issues the refresh pass or the
        re-cache before it returns, and with graphs that is a few launches instead of
        thousands. Directive → changed frames on the host went from 359 to 308 ms ("after"
        re-cache timing) and from 444 to 414 ms ("before")
        (benchmarks/results/longlive-h100-2026-11-25-graphs.json). Paths without graphs
        (sparse routers, `cuda_graphs=False`, a failed capture) still pay that host time.
        torch.compile's own "reduce-overhead" mode cannot do this here: the block writes the
        KV cache in place, and its cudagraph trees skip functions that mutate their inputs.

        One graph per (chunk plan, attention functions, refresh or not, input shape): a session
        meets a few dozen (the window's fill levels, its ring positions, the re-cache plans),
        each captured the first time it runs, all in one memory pool (never two at once). The
        graphs read the cache, text K/V and weights in place, so prompt switches, resets,
        re-caches and later sessions of the same size need no new capture; new buffers (another
        size), `compile`, `fuse_qkv` and FP8 quantisation drop them. Sparse routers keep the
        plain path: their kernels build masks per call.
        """
        self._graphs = {} if enabled else None

    def drop_cuda_graphs(self) -> None:
        """Forget captured graphs (they read the buffers and weights they were captured with);
        passes are captured again as they come."""
        if self._graphs is not None:
            self._graphs = {}

    def _replay(self, x: torch.Tensor, t: torch.Tensor, plan: ChunkPlan, attn_fns: tuple,
                refresh: bool) -> torch.Tensor | None:
        key = (id(plan), attn_fns, refresh, tuple(x.shape), x.dtype, tuple(t.shape))
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(x, t, plan, attn_fns, refresh)
            if captured is None:  # a kernel that cannot be captured: keep working without graphs
                self._graphs = None
                return self._chunk_impl(x, t, plan, attn_fns, refresh)
            self._graphs[key] = captured
        captured.x.copy_(x)
        captured.t.copy_(t)
        captured.graph.replay()
        # The next replay of this graph overwrites `out`.
        return None if captured.out is None else captured.out.clone()

    def _capture(self, x: torch.Tensor, t: torch.Tensor, plan: ChunkPlan, attn_fns: tuple,
                 refresh: bool) -> _CapturedPass | None:
        """Run the pass once (compiles, initialises kernels; writes the K/V the replay rewrites
        identically), then record it. None, with a warning, when the capture fails."""
        static_x, static_t = x.clone(), t.clone()
        self._chunk_impl(static_x, static_t, plan, attn_fns, refresh)  # errors here are real ones
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream(x.device)
        try:
            # thread_local: CUDA work of other threads (text encoding, decode) may go on meanwhile.
            with torch.cuda.graph(graph, pool=self._graph_pool, capture_error_mode="thread_local"):
                out = self._chunk_impl(static_x, static_t, plan, attn_fns, refresh)
        except Exception:
            torch.cuda.set_stream(stream)  # a failed capture_end skips restoring it
            log.warning("CUDA graph capture failed; LongLive runs without CUDA graphs", exc_info=True)
            return None
        return _CapturedPass(graph, static_x, static_t, out, plan)

    # ---- reference: whole sequence at once ------------------------------------------------

    def forward_full(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, *, block_causal: bool = False
    ) -> torch.Tensor:
        """Flow prediction for a whole clip (B, C, F, H, W) with absolute frame positions.

        t is (B,) or per-frame (B, F). `block_causal` lets each chunk of
        `num_frame_per_block` frames see itself and earlier chunks (what the cache computes);
        otherwise attention is bidirectional (Wan / diffusers). No window is applied, so
        this equals the streaming path while the clip fits in `local_attn_size` frames.
        """
        cfg = self.cfg
        b, _, frames, hh, ww = x.shape
        _, ph, pw = cfg.patch_size
        self.grid = (hh // ph, ww // pw)
        tokens = self.patchify(x)
        per_frame = self.grid[0] * self.grid[1]
        if t.dim() == 1:
            t = t[:, None]
        e, e0 = self.embed_time(t)
        cos, sin = rope_angles(cfg, torch.arange(frames, device=x.device), *self.grid)
        mask = None
        if block_causal:
            chunk_of = torch.arange(frames * per_frame, device=x.device) // (per_frame * cfg.num_frame_per_block)
            mask = chunk_of[None, :] <= chunk_of[:, None]
        ctx = self.embed_text(context)
        for block in self.blocks:
            text_k, text_v = block.cross_attn.text_kv(ctx)
            tokens = block.forward_full(tokens, e0, text_k, text_v, cos, sin, mask)
        return self.unpatchify(self.head(tokens, e), frames).float()


def build_on_meta(cfg: WanConfig) -> CausalWanModel:
    """The model with no storage: for layout checks and `load_state_dict(assign=True)`."""
    with torch.device("meta"):
        return CausalWanModel(cfg)


@torch.no_grad()
def init_random_(model: CausalWanModel, seed: int = 0, std: float = 0.02) -> CausalWanModel:
    """Fill every parameter with seeded random values (benchmarks and tests: no weights here).

    Norm weights get 1, biases small, so activations stay in a realistic range.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm3.weight"):
            vals = 1 + 0.1 * torch.randn(p.shape, generator=gen, device=device)
        elif "modulation" in name:
            vals = torch.randn(p.shape, generator=gen, device=device) / p.shape[-1] ** 0.5
        else:
            vals = std * torch.randn(p.shape, generator=gen, device=device)
        p.copy_(vals.to(p.dtype))
    return model
