"""The KV window of one session: which cache rows a pass writes, which it reads, at which positions.

A session's cache (one row of the engine's batched buffers, `runtime.KVStore`) holds
`local_attn_size` latent frames of keys and values per layer: `sink_size` frames written once,
then a ring of chunk slots for the rolling window. A new chunk overwrites the oldest ring slot
in place (no clone of the cache, no `torch.cat` growth).

RoPE positions are relative to the window: sink frames at 0..sink-1, then the window's frames
in age order, the pass's own frames last. Keys are cached rotated to that position; when the
ring evicts, the kept chunks' keys are rotated one chunk earlier, once per chunk
(`KVWindow.shift_rows`, applied by the runtime). Positions never exceed `local_attn_size - 1`,
so a session has no 1024-frame limit (the reference's RoPE table) and never hard-cuts.
Distances between window frames equal the reference's; only the sink's distance is
compressed (docs/longlive.md).

Two objects, so that sessions of one size share everything that is not their own:
- `WindowGeometry` (one per frame size): the float32 RoPE tables and the plans, built once;
  every session of that size gets the *same* plan objects, which CUDA graphs are keyed on.
- `KVWindow` (one per session): which slots hold which chunk (host-side ints only: nothing
  here reads device memory, so planning never syncs the GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import WanConfig

# --------------------------------------------------------------------------- RoPE tables


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
    Angles are formed in float64 once, here (tables are built when a size is set up), and
    stored as float32: nothing per chunk runs in float64.
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


# --------------------------------------------------------------------------- plans


@dataclass(eq=False)
class ChunkPlan:
    """Where one pass writes in a session's cache and what it attends to (built once, shared).

    `slots` are the chunk slots the pass writes (one for a chunk; several for a stock
    re-cache pass), in position order; `context` the other slots it reads, in position order
    (sink first, then the window oldest first). Positions: context first, own slots last.
    The pass attends to every key it reads, its own included, without a mask: for one chunk
    that is the block-causal rule; for a multi-slot re-cache pass it is stock LongLive's
    unmasked window pass.

    Keys read are the first `n_valid` cache rows when they form a prefix, else `read_index`.
    cos/sin rotate the pass's queries and keys to their positions.
    """

    slots: tuple[int, ...]
    context: tuple[int, ...]
    own_start: int  # row of the first own key among the keys read (for sparse routers)
    write_index: torch.Tensor  # (len(slots) * chunk_tokens,) int64
    n_valid: int
    read_index: torch.Tensor | None
    q_cos: torch.Tensor
    q_sin: torch.Tensor
    replayable: bool  # reads a prefix of the cache (a chunk, filling or full; a stock re-cache): graphs replay it

    @property
    def slot(self) -> int:
        """The slot of a one-chunk plan (a new chunk, a causal re-cache pass, a sink prime)."""
        assert len(self.slots) == 1, "a multi-slot plan has no single slot"
        return self.slots[0]

    @property
    def frames_per_slot(self) -> int:
        return self.write_index.numel() // max(1, len(self.slots))


class WindowGeometry:
    """RoPE tables and plans of one frame size, shared by every session of that size."""

    def __init__(self, cfg: WanConfig, grid_h: int, grid_w: int, device: torch.device) -> None:
        self.cfg = cfg
        self.grid = (grid_h, grid_w)
        self.tokens_per_frame = grid_h * grid_w
        self.chunk = cfg.num_frame_per_block
        self.sink_chunks = cfg.sink_size // self.chunk
        self.ring_chunks = cfg.window_frames // self.chunk
        self.n_slots = self.sink_chunks + self.ring_chunks
        assert self.ring_chunks >= 1, "the window must hold the current chunk"
        self.device = device
        # RoPE by frame position 0..local_attn_size-1, token-major, float32, built once.
        positions = torch.arange(cfg.local_attn_size, device=device)
        cos, sin = rope_angles(cfg, positions, grid_h, grid_w)
        self.cos = cos.view(cfg.local_attn_size, self.tokens_per_frame, -1)
        self.sin = sin.view(cfg.local_attn_size, self.tokens_per_frame, -1)
        # Rotation by minus one chunk of frames (time axis only), for the ring shift.
        self.shift_cos, self.shift_sin = rope_angles(cfg, torch.tensor([-self.chunk], device=device), 1, 1)
        self._plans: dict[tuple[tuple[int, ...], tuple[int, ...]], ChunkPlan] = {}
        self._positions: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._shifts: dict[tuple[int, ...], torch.Tensor] = {}

    @property
    def rows_per_slot(self) -> int:
        return self.chunk * self.tokens_per_frame

    @property
    def total_rows(self) -> int:
        return self.n_slots * self.rows_per_slot

    def rows(self, slots) -> list[int]:
        r = self.rows_per_slot
        return [i for s in slots for i in range(s * r, (s + 1) * r)]

    def _rotations(self, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin of `count` chunks at positions starting with chunk rank `first` (shared)."""
        key = (first, count)
        if key not in self._positions:
            frames = torch.arange(first * self.chunk, (first + count) * self.chunk, device=self.device)
            self._positions[key] = (
                self.cos[frames].reshape(frames.numel() * self.tokens_per_frame, -1),
                self.sin[frames].reshape(frames.numel() * self.tokens_per_frame, -1),
            )
        return self._positions[key]

    def plan(self, slots, context=()) -> ChunkPlan:
        """The plan writing `slots` while attending to `context` slots and themselves
        (built once per distinct pair: sessions of this size share plan objects)."""
        key = (tuple(slots), tuple(context))
        if key not in self._plans:
            self._plans[key] = self._build(*key)
        return self._plans[key]

    def _build(self, slots: tuple[int, ...], context: tuple[int, ...]) -> ChunkPlan:
        assert slots and not set(slots) & set(context), "a plan writes slots it does not also read as context"
        read = sorted((*context, *slots))
        prefix = read == list(range(len(read)))
        q_cos, q_sin = self._rotations(len(context), len(slots))
        n = len(read) * self.rows_per_slot
        return ChunkPlan(
            slots=slots,
            context=context,
            own_start=read.index(slots[0]) * self.rows_per_slot,
            write_index=torch.tensor(self.rows(slots), device=self.device),
            n_valid=n,
            read_index=None if prefix else torch.tensor(self.rows(read), device=self.device),
            q_cos=q_cos,
            q_sin=q_sin,
            replayable=prefix,
        )

    def shift_index(self, kept: tuple[int, ...]) -> torch.Tensor:
        if kept not in self._shifts:
            self._shifts[kept] = torch.tensor(self.rows(kept), device=self.device)
        return self._shifts[kept]


@dataclass
class KVWindow:
    """Slot bookkeeping for one session's sink + ring cache (host-side ints only).

    Chunk slots 0..sink_chunks-1 hold the sink; the rest is a ring of chunk slots. Chunks fill
    the sink first, then the ring in order, so while streaming the valid part of the cache is
    a prefix; once full, the oldest ring slot is reused.
    """

    geometry: WindowGeometry
    chunks_written: int = 0  # chunks committed since the session began
    ring_age: list[int] = field(default_factory=list)  # ring slots, oldest first

    def reset(self) -> None:
        self.chunks_written = 0
        self.ring_age = []

    @property
    def sink_full(self) -> bool:
        return self.chunks_written >= self.geometry.sink_chunks

    @property
    def committed(self) -> list[int]:
        """Slots holding committed chunks, in position order (sink first, ring oldest first)."""
        g = self.geometry
        return list(range(min(g.sink_chunks, self.chunks_written))) + list(self.ring_age)

    def next_plan(self) -> ChunkPlan:
        """Plan for the next new chunk (call `commit` once its clean refresh pass has run)."""
        g = self.geometry
        if not self.sink_full:
            return g.plan((self.chunks_written,), tuple(range(self.chunks_written)))
        sinks = tuple(range(g.sink_chunks))
        if len(self.ring_age) < g.ring_chunks:
            return g.plan((g.sink_chunks + len(self.ring_age),), sinks + tuple(self.ring_age))
        return g.plan((self.ring_age[0],), sinks + tuple(self.ring_age[1:]))

    def shift_rows(self) -> torch.Tensor | None:
        """Cache rows whose keys must move one chunk earlier before the next new chunk (the
        kept ring chunks when a full ring evicts), or None."""
        g = self.geometry
        if not self.sink_full or len(self.ring_age) < g.ring_chunks or g.ring_chunks < 2:
            return None
        return g.shift_index(tuple(self.ring_age[1:]))

    def commit(self, plan: ChunkPlan) -> None:
        """Record that the one-chunk pass planned by `plan` is now in the cache."""
        if plan.slot >= self.geometry.sink_chunks:
            if plan.slot in self.ring_age:
                self.ring_age.remove(plan.slot)
            self.ring_age.append(plan.slot)
        self.chunks_written += 1

    # ---- re-cache ---------------------------------------------------------------------------

    def context_of(self, in_flight: ChunkPlan | None) -> list[int]:
        """The slots a re-cache rewrites: what the chunk in flight attends to (its context, the
        window after its ring shift), or with none in flight, every committed chunk."""
        return list(in_flight.context) if in_flight is not None else self.committed

    def causal_recache_plans(self, in_flight: ChunkPlan | None = None) -> list[ChunkPlan]:
        """Ours: one pass per window chunk, oldest first, each seeing the sink and the chunks
        before it (as when it was made). The sink is kept."""
        g = self.geometry
        context = self.context_of(in_flight)
        sinks = tuple(s for s in context if s < g.sink_chunks)
        ring = [s for s in context if s >= g.sink_chunks]
        return [g.plan((slot,), sinks + tuple(ring[:i])) for i, slot in enumerate(ring)]

    def stock_recache_plan(self, in_flight: ChunkPlan | None = None) -> ChunkPlan | None:
        """Stock LongLive's `_recache_after_switch`: one unmasked pass over the last
        min(local_attn_size, t) frames. While no frame has left the window (t <= local_attn_size)
        that is every frame, the sink included (rewritten under the new prompt); after, the
        window's chunks, which attend to the kept sink and to each other. None: nothing to do."""
        g = self.geometry
        context = self.context_of(in_flight)
        if not context:
            return None
        frames_made = self.chunks_written * g.chunk
        if frames_made <= g.cfg.local_attn_size:
            return g.plan(tuple(context), ())
        sinks = tuple(s for s in context if s < g.sink_chunks)
        ring = tuple(s for s in context if s >= g.sink_chunks)
        return g.plan(ring, sinks) if ring else None
