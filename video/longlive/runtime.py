"""Running the DiT's streaming passes: KV buffers, batching, torch.compile, CUDA graphs.

`model.py` is weights and maths; this module owns what a running engine adds to them (gpt-fast
keeps the same split between `model.py` and `generate.py`):

- `KVStore`: the device buffers of one frame size, for `capacity` session rows: every layer's
  KV window (`cache_k`/`cache_v`, (layers, rows, heads, window tokens, head_dim)) and the text
  K/V of each row's prompt. A session owns one row; nothing else of it lives here.
- `EngineRuntime.run(rows)`: one pass (a denoising step, a clean refresh, a re-cache pass) for
  several sessions at once. Norms, modulation, every linear and the FFN run batched over the
  rows; each row then writes its keys/values into its own window and attends to it, with its
  own plan (fill level, ring slot, re-cache) and its own attention router, rows reading the same
  keys in one call. So sessions at different points of their streams (one starting, one
  re-caching, three in steady state) share one forward, and a row's result does not depend on
  which rows share the pass (a row's attention is the same kernel's, alone or in a batch;
  batched GEMMs may round differently on a GPU, `benchmarks/longlive.py --paced` reports how
  much).
- `compile()`: regional compilation of the two batched halves of a block
  (`Block.attn_inputs` / `Block.after_attn`), one compiled function reused by all 30 layers.
  Shapes are left to Dynamo's automatic dynamic sizes: the first batch size and token count
  compile static, a second one marks the dimension dynamic, and later joins and leaves reuse
  that code instead of compiling again. Inductor's caches live on disk
  (`TORCHINDUCTOR_CACHE_DIR`, default `~/.cache/comfyui-persona/inductor`), so a restart
  compiles from the cache in seconds.
- Everything runs under `torch.inference_mode()`, whichever thread drives (inference mode is
  per thread), so buffers made under it may be written from any thread.
- `use_cuda_graphs()`: a one-chunk pass whose rows all read the same prefix of their caches
  (the full window, the common case, or the same point of filling it) replays one CUDA graph
  per row range, input shape and prefix, whichever slot each row writes (write indices are a
  static input); a pass whose rows are several ranges (a hole, mixed fills) replays one graph
  per range. Re-cache passes launch their kernels directly.

Nothing here knows about prompts, directives or time: `stream.SessionStream` decides which
passes a session needs, `host.EngineHost` which sessions run together.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..attention import (
    AttentionBackend,
    AttentionRouter,
    BackendUnavailableError,
    DenseRouter,
    dense_attention,
)
from ..attention.dispatch import check_backend
from ..attention.flash import flash_dense_attention
from .model import Block, CausalWanModel, apply_rope
from .window import ChunkPlan, WindowGeometry, rope_axis_dims

log = logging.getLogger(__name__)

DENSE = DenseRouter()
#: Inductor settings `compile()` uses unless told otherwise. Coordinate-descent tuning times
#: each generated kernel's neighbouring launch settings (block sizes, warps) when it is first
#: compiled and keeps the fastest: the norm, modulation and quantisation kernels between the
#: GEMMs are memory-bound, and their defaults left bandwidth unused (a 480x832 chunk
#: 255.9 -> 252.0 ms on an H100, longlive-h100-2026-12-07-wave10-profile.json). It costs
#: seconds of the first compile; the result is in Inductor's on-disk cache after.
TUNED_KERNELS = {"coordinate_descent_tuning": True}
#: Where Inductor keeps compiled kernels between runs unless TORCHINDUCTOR_CACHE_DIR is set.
DEFAULT_INDUCTOR_CACHE = Path("~/.cache/comfyui-persona/inductor")


@dataclass
class PassRow:
    """One session's part of a pass: its KV row, where it writes and reads, its input latents
    (1, C, frames, h, w) at timestep `t`, and whether the flow prediction is wanted (False for
    a clean refresh or re-cache pass, run only for the keys/values it writes)."""

    row: int
    plan: ChunkPlan
    x: torch.Tensor
    t: float
    output: bool
    router: AttentionRouter = DENSE


class KVStore:
    """Device buffers of one frame size for `capacity` session rows (see the module docstring)."""

    def __init__(self, model: CausalWanModel, capacity: int, latent_h: int, latent_w: int,
                 dtype: torch.dtype | None = None) -> None:
        cfg = model.cfg
        self.latent_hw = (latent_h, latent_w)
        self.geometry = WindowGeometry(cfg, *model.grid_of(latent_h, latent_w), model.device)
        self.dtype = dtype or model.compute_dtype
        self.capacity = 0
        self.cache_k = self.cache_v = self.text_k = self.text_v = torch.empty(0)
        self._cfg = cfg
        self._device = model.device
        self.grow(capacity)

    @torch.inference_mode()
    def grow(self, capacity: int) -> None:
        """Make room for `capacity` rows, keeping the rows already there (a copy; rare)."""
        if capacity <= self.capacity:
            return
        cfg, g = self._cfg, self.geometry
        shape = (cfg.num_layers, capacity, cfg.num_heads, g.total_rows, cfg.head_dim)
        text_shape = (cfg.num_layers, capacity, cfg.num_heads, cfg.text_len, cfg.head_dim)
        old = (self.cache_k, self.cache_v, self.text_k, self.text_v)
        new = tuple(torch.zeros(s, device=self._device, dtype=self.dtype) for s in (shape, shape, text_shape, text_shape))
        if self.capacity:
            for a, b in zip(old, new, strict=True):
                b[:, : self.capacity].copy_(a)
        self.cache_k, self.cache_v, self.text_k, self.text_v = new
        self.capacity = capacity

    @torch.inference_mode()
    def clear_row(self, row: int) -> None:
        """Empty a row's KV window (a new session in it starts from nothing)."""
        self.cache_k[:, row].zero_()
        self.cache_v[:, row].zero_()

    @torch.inference_mode()
    def move_row(self, src: int, dst: int) -> None:
        """Copy row `src` (window and prompt) to `dst` (the host compacts rows on a leave)."""
        for buf in (self.cache_k, self.cache_v, self.text_k, self.text_v):
            buf[:, dst].copy_(buf[:, src])


@dataclass
class _CapturedPass:
    """One recorded pass: copy inputs into `x`/`t`/`write`, replay, read `out`."""

    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    t: torch.Tensor
    write: torch.Tensor
    out: torch.Tensor | None  # None for an all-refresh pass


#: A row range that is only part of a pass (see `EngineRuntime._graph_spans`) is captured when it
#: comes up for this many times; before, it launches its kernels directly. Why: a capture
#: waits for the GPU, empties the allocator's caches (torch.cuda.graph does) and runs the pass
#: once more, and eight paced sessions at 320x576 brought up 90 ranges in 20 s when each was
#: captured at once
#: (longlive-serving-h100-2026-12-07-wave8-spans-paced-320.json).
SPLIT_CAPTURE_AFTER = 4


class EngineRuntime:
    """Runs batched streaming passes of one `CausalWanModel` (see the module docstring)."""

    def __init__(self, model: CausalWanModel) -> None:
        self.model = model
        self.store: KVStore | None = None
        self._pre = Block.attn_inputs
        self._post = Block.after_attn
        self.compiled: dict | None = None  # the torch.compile arguments in force, or None
        self._graphs: dict[tuple, _CapturedPass] | None = None  # see use_cuda_graphs
        self._range_sightings: dict[tuple, int] = {}  # see SPLIT_CAPTURE_AFTER
        #: Sightings of a partial row range before its capture: SPLIT_CAPTURE_AFTER while serving,
        #: 1 during `EngineHost.warm_up` (every range it meets is worth a graph at load).
        self.split_capture_after = SPLIT_CAPTURE_AFTER
        self.passes_run = 0
        self.graph_replays = 0
        self._timesteps: dict[tuple[float, ...], torch.Tensor] = {}  # see _timestep_tensor
        self._dense = dense_attention  # what DenseRouter's dense attention runs: see use_flash_attention
        #: One attention call for the rows of a pass that read the same keys (`_shared_read`);
        #: False: a call per row, as before (benchmarks compare; call `drop_cuda_graphs` after a change).
        self.attend_together = True

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- buffers ---------------------------------------------------------------------------

    def setup(self, capacity: int, latent_h: int, latent_w: int) -> KVStore:
        """The store for this frame size with room for `capacity` rows. The same size again
        keeps the buffers (and the CUDA graphs reading them), growing them if needed; another
        size replaces them."""
        store = self.store
        if store is not None and store.latent_hw == (latent_h, latent_w) and store.dtype == self.model.compute_dtype:
            if capacity > store.capacity:
                store.grow(capacity)
                self.drop_cuda_graphs()  # they read the old buffers
            return store
        self.store = KVStore(self.model, capacity, latent_h, latent_w)
        self.drop_cuda_graphs()
        return self.store

    def _require_store(self) -> KVStore:
        if self.store is None:
            raise RuntimeError("EngineRuntime.setup(capacity, latent_h, latent_w) first")
        return self.store

    @torch.inference_mode()
    def set_text(self, row: int, context: torch.Tensor) -> None:
        """Compute every layer's cross-attention K/V for this prompt into the row, in place."""
        store = self._require_store()
        k, v = self.model.text_kv(context.to(self.device))
        store.text_k[:, row].copy_(k[:, 0])
        store.text_v[:, row].copy_(v[:, 0])

    @torch.inference_mode()
    def shift(self, row: int, rows: torch.Tensor | None) -> None:
        """Move the kept ring chunks' keys (`rows`, from `KVWindow.shift_rows`) one chunk
        earlier. A shift along time rotates only the time-axis RoPE pairs (the first ones, see
        `rope_axis_dims`), and all layers move together: one op on a third of each key."""
        if rows is None:
            return
        store = self._require_store()
        g = store.geometry
        n_time = 2 * rope_axis_dims(self.model.cfg.head_dim)[0]
        cos, sin = g.shift_cos[:, : n_time // 2], g.shift_sin[:, : n_time // 2]
        part = store.cache_k[:, row, :, :, :n_time]  # (layers, heads, tokens, n_time)
        part.index_copy_(2, rows, apply_rope(part.index_select(2, rows), cos, sin))

    # ---- passes ----------------------------------------------------------------------------

    @torch.inference_mode()
    def run(self, rows: list[PassRow]) -> list[torch.Tensor | None]:
        """One pass for `rows` (one row per session, each at most once): the flow prediction
        (1, C, frames, h, w) float32 of each row that wants it, None for the others.

        Rows must have the same number of input frames (one chunk; a stock re-cache pass runs
        with rows of its own size). Writes each row's keys/values into its window rows."""
        store = self._require_store()
        assert rows, "a pass needs at least one row"
        frames = rows[0].x.shape[2]
        assert all(r.x.shape[2] == frames for r in rows), "rows of one pass have the same number of frames"
        assert len({r.row for r in rows}) == len(rows), "a session appears once per pass"
        self.passes_run += 1
        spans = self._graph_spans(rows)
        if spans is None or len(spans) == 1 and spans[0] == list(range(len(rows))):
            return self._run_rows(store, rows)
        outs: list[torch.Tensor | None] = [None] * len(rows)
        for span in spans:
            for i, out in zip(span, self._run_rows(store, [rows[i] for i in span], split=True), strict=True):
                outs[i] = out
        return outs

    def _run_rows(self, store: KVStore, rows: list[PassRow], *, split: bool = False) -> list[torch.Tensor | None]:
        refresh = not any(r.output for r in rows)
        x = torch.cat([r.x for r in rows]) if len(rows) > 1 else rows[0].x
        t = self._timestep_tensor(tuple(r.t for r in rows))
        fns = [self._attention_fns(r) for r in rows]
        if self._graphable(rows, x):
            out = self._replay(rows, x, t, fns, refresh, split=split)
        else:
            write = [r.plan.write_index for r in rows]
            out = self._pass(store, rows, x, t, write, fns, refresh)
        if out is None:
            return [None] * len(rows)
        return [out[i : i + 1] if r.output else None for i, r in enumerate(rows)]

    def _timestep_tensor(self, values: tuple[float, ...]) -> torch.Tensor:
        """The pass's timesteps on the device, made once per distinct tuple.

        Why: `torch.tensor(list, device="cuda")` copies from pageable memory, which makes the host
        wait until the GPU has finished all queued work; every pass would then start from an idle
        GPU while the host prepares it. A stream has a handful of timesteps (the warped schedule,
        the clean pass's), so a few tensors cover every pass; the dict is emptied if sessions ever
        make it large. The tensors are only read (copied into a graph's input or used in place)."""
        t = self._timesteps.get(values)
        if t is None:
            if len(self._timesteps) >= 256:
                self._timesteps.clear()
            t = self._timesteps[values] = torch.tensor(values, device=self.device, dtype=torch.float32)
        return t

    def _attention_fns(self, row: PassRow) -> tuple:
        """The router's function per layer for this row, chosen on the host (outside any graph);
        dense attention is this runtime's dense kernel (see `use_flash_attention`)."""
        refresh = not row.output
        fns = (row.router.select(i, row.t, refresh) for i in range(len(self.model.blocks)))
        return tuple(self._dense if fn is dense_attention else fn for fn in fns)

    # ---- kernels ---------------------------------------------------------------------------

    @property
    def flash_attention(self) -> bool:
        """Whether dense attention over many keys runs on FlashAttention-4 (`use_flash_attention`)."""
        return self._dense is flash_dense_attention

    def use_flash_attention(self, enabled: bool = True, *, required: bool = False) -> bool:
        """Run dense attention over many keys on FlashAttention-4 (video/attention/flash.py says
        where and why) if it can run here and passes its self-check against SDPA; returns
        whether it is on. Otherwise SDPA (cuDNN first) with a warning, or, when `required`,
        `BackendUnavailableError` with the reasons (the missing package alone when it is missing).
        Drops captured graphs (they hold the old kernels)."""
        self._dense = dense_attention
        try:
            if enabled:
                cfg = self.model.cfg
                probe = torch.zeros(1, 1, 1, cfg.head_dim, device=self.device, dtype=self.model.compute_dtype)
                try:
                    check_backend(AttentionBackend.FLASH, probe, probe, probe)
                    self._dense = flash_dense_attention
                except BackendUnavailableError as exc:
                    if required:
                        raise
                    log.warning("LongLive keeps SDPA for dense attention: %s", exc)
        finally:
            self.drop_cuda_graphs()
        return self.flash_attention

    def _pass(self, store: KVStore, rows: list[PassRow], x: torch.Tensor, t: torch.Tensor, write,
              fns: list[tuple], refresh: bool) -> torch.Tensor | None:
        model = self.model
        frames = x.shape[2]
        tokens = model.patchify(x)
        e, e0 = model.embed_time(t[:, None])
        cos, sin = _rotations(rows)
        text_k, text_v = _rows_of(store.text_k, rows), _rows_of(store.text_v, rows)
        shared = _shared_read(rows, fns) if self.attend_together else None
        last = len(model.blocks) - 1
        for i, block in enumerate(model.blocks):
            mods, q, k, v = self._pre(block, tokens, e0, cos, sin)
            if refresh and i == last:  # the last block of a clean pass: only its K/V are read later
                _write_kv(store, i, rows, write, k, v)
                return None
            attn = _attend(store, i, rows, write, fns, q, k, v, shared)
            tokens = self._post(block, tokens, attn, mods, text_k[i], text_v[i])
        return model.unpatchify(model.head(tokens, e), frames, store.geometry.grid).float()

    # ---- compile ---------------------------------------------------------------------------

    def compile(self, mode: str | None = None, *, backend: str = "inductor", fullgraph: bool = False,
                options: dict | None = None, cache_dir: str | os.PathLike | None = None) -> None:
        """torch.compile the two batched halves of a block (an explicit call: importing compiles
        nothing). One compiled function serves all layers (regional compilation); see the module
        docstring for shapes and the on-disk cache.

        mode: None (Inductor's default mode with `TUNED_KERNELS`), "max-autotune-no-cudagraphs"
        (Triton GEMM templates autotuned against cuBLAS, FP8 included: minutes of start-up,
        cached on disk); or `options`, Inductor settings instead of a mode and of
        `TUNED_KERNELS` (e.g. {"triton.multi_kernel": 1}; {} for Inductor's plain default).
        `backend`/`fullgraph` are torch.compile's (tests trace with backend "eager",
        fullgraph=True to prove the halves have no graph breaks without paying for codegen).
        """
        import torch._dynamo

        if backend == "inductor":
            use_disk_cache(cache_dir)
            if mode is None and options is None:
                options = dict(TUNED_KERNELS)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        self._pre, self._post = (
            torch.compile(fn, mode=mode, dynamic=None, backend=backend, fullgraph=fullgraph, options=options)
            for fn in (Block.attn_inputs, Block.after_attn)
        )
        self.compiled = {"mode": mode, "backend": backend, "options": options}
        self.drop_cuda_graphs()  # captured with the old code

    # ---- CUDA graphs -----------------------------------------------------------------------

    def use_cuda_graphs(self, enabled: bool = True) -> None:
        """Replay one-chunk passes as CUDA graphs (CUDA device, dense attention).

        Why: a pass is a kernel launch per op of every layer (more with several rows: each row's
        attention is its own kernels). The GPU time hardly changes, but the host's does: the
        scheduler decides between passes (who runs, whether a directive preempts a chunk), and
        with graphs a pass is one launch, so it is never waiting for the host to catch up.

        One graph per (row range, input shape, refresh or not, keys read), captured the first
        time such a pass runs (the window's filling too, so a session's first chunk, whose
        latency a viewer waits for, is a launch a pass like the rest), all in one memory pool
        (passes never run at once). A graph reads the row range's KV and text buffers, the
        weights, and static inputs (latents, timesteps, each row's write rows), so any ring slot, prompt, re-cache or later session in those rows
        replays it; new buffers (another size, more rows), `compile` or new weights drop them.
        A pass whose rows are not one range (a hole, rows out of order, rows at different points
        of filling) replays one graph per range (`_graph_spans`). Re-cache passes and sparse
        routers launch directly. `warm_up` captures the fill's graphs before a real session.
        """
        self._graphs = {} if enabled else None

    @contextlib.contextmanager
    def capturing_every_range(self):
        """Capture each partial row range the first time it comes (`split_capture_after` 1):
        for a warm-up, where nobody waits for the capture."""
        before, self.split_capture_after = self.split_capture_after, 1
        try:
            yield
        finally:
            self.split_capture_after = before

    def drop_cuda_graphs(self) -> None:
        """Forget captured graphs; passes are captured again as they come."""
        self._range_sightings = {}
        if self._graphs is not None:
            self._graphs = {}

    @property
    def graphs_captured(self) -> int:
        return len(self._graphs or {})

    def graph_names(self) -> list[str]:
        """Each captured graph as "rows a-b, tokens (B, C, F, H, W), refresh, n keys": benchmarks
        name the ones a run captured while sessions streamed (what the warm-up missed)."""
        return [f"rows {span[0]}-{span[1] - 1}, x {shape}, {'refresh' if refresh else 'denoise'}, {keys} keys"
                for span, shape, _, refresh, keys in (self._graphs or {})]

    def replays(self, plan: ChunkPlan, router: AttentionRouter) -> bool:
        """Whether a pass of one row with this plan and router replays a CUDA graph (one launch)
        rather than launching its kernels one by one."""
        return (self._graphs is not None and self.device.type == "cuda" and plan.replayable
                and isinstance(router, DenseRouter))

    def _graph_spans(self, rows: list[PassRow]) -> list[list[int]] | None:
        """When every row replays a graph: the rows' indices grouped into runs of consecutive
        store rows reading the same number of keys (one graph each), else None.

        Why: a batch with a hole (a session whose caller has not come back yet, one still
        filling its window) is not one row range, and a pass that is not one graph launches its
        kernels one by one: with 8 sessions at 320x576 an H100 made 104 fps in all when most
        passes launched that way and 125 when most replayed
        (longlive-serving-h100-2026-12-07-wave7*-capacity-320.json). A few graph launches with
        smaller batches cost the GPU about the same (batching gains little on an H100) and the
        host almost nothing."""
        if self._graphs is None or not rows[0].x.is_cuda or not all(self.replays(r.plan, r.router) for r in rows):
            return None
        order = sorted(range(len(rows)), key=lambda i: rows[i].row)
        spans = [[order[0]]]
        for i in order[1:]:
            last = rows[spans[-1][-1]]
            if rows[i].row == last.row + 1 and rows[i].plan.n_valid == last.plan.n_valid:
                spans[-1].append(i)
            else:
                spans.append([i])
        return spans

    def _graphable(self, rows: list[PassRow], x: torch.Tensor) -> bool:
        return (
            x.is_cuda
            and all(self.replays(r.plan, r.router) for r in rows)
            and len({r.plan.n_valid for r in rows}) == 1
            and _contiguous(rows) is not None
        )

    def _replay(self, rows: list[PassRow], x: torch.Tensor, t: torch.Tensor, fns, refresh: bool, *,
                split: bool = False) -> torch.Tensor | None:
        store = self._require_store()
        span = _contiguous(rows)
        key = (span, tuple(x.shape), x.dtype, refresh, rows[0].plan.n_valid)
        write = torch.stack([r.plan.write_index for r in rows])
        captured = self._graphs.get(key)
        if captured is None and split:
            seen = self._range_sightings[key] = self._range_sightings.get(key, 0) + 1
            if seen < self.split_capture_after:
                return self._pass(store, rows, x, t, list(write), fns, refresh)
        if captured is None:
            captured = self._capture(store, rows, x, t, write, fns, refresh)
            if captured is None:  # a kernel that cannot be captured: keep working without graphs
                self._graphs = None
                return self._pass(store, rows, x, t, list(write), fns, refresh)
            self._graphs[key] = captured
        captured.x.copy_(x)
        captured.t.copy_(t)
        captured.write.copy_(write)
        captured.graph.replay()
        self.graph_replays += 1
        return None if captured.out is None else captured.out.clone()  # the next replay overwrites `out`

    def _capture(self, store, rows, x, t, write, fns, refresh) -> _CapturedPass | None:
        """Run the pass once from static inputs (compiles, initialises kernels; writes the K/V
        the replay rewrites identically), then record it. None, with a warning, on failure."""
        static_x, static_t, static_w = x.clone(), t.clone(), write.clone()
        self._pass(store, rows, static_x, static_t, list(static_w), fns, refresh)  # errors here are real
        # One memory pool for every graph (passes never run at once), named by a live graph:
        # a bare `graph_pool_handle()` kept past its graphs trips the allocator's pool
        # bookkeeping at the next capture (seen on torch 2.11: INTERNAL ASSERT use_count > 0).
        live = next(iter(self._graphs.values()), None) if self._graphs else None
        pool = live.graph.pool() if live is not None else None
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream(x.device)
        # No garbage collection while capturing: a collected CUDA graph (a closed session's
        # host, say) is destroyed from this thread, which CUDA forbids mid-capture, and the
        # capture fails ("operation not permitted when stream is capturing", then graphs off;
        # seen in the CUDA tests on an H100, logs/gpu-kv-write-6815adf-gpu-tests.log).
        collecting = gc.isenabled()
        gc.disable()
        try:
            # thread_local: CUDA work of other threads (text encoding, decode) may go on meanwhile.
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                out = self._pass(store, rows, static_x, static_t, list(static_w), fns, refresh)
        except Exception:
            torch.cuda.set_stream(stream)  # a failed capture_end skips restoring it
            log.warning("CUDA graph capture failed; LongLive runs without CUDA graphs", exc_info=True)
            return None
        finally:
            if collecting:
                gc.enable()
        return _CapturedPass(graph, static_x, static_t, static_w, out)


# --------------------------------------------------------------------------- per-row helpers


def _contiguous(rows: list[PassRow]) -> tuple[int, int] | None:
    """(first, end) when the rows are store rows first..end-1 in order, else None."""
    first = rows[0].row
    return (first, first + len(rows)) if all(r.row == first + i for i, r in enumerate(rows)) else None


def _rows_of(buf: torch.Tensor, rows: list[PassRow]) -> torch.Tensor:
    """buf[:, rows]: a view when the rows are contiguous and in order, else a gathered copy."""
    span = _contiguous(rows)
    if span is not None:
        return buf[:, span[0] : span[1]]
    return buf.index_select(1, torch.tensor([r.row for r in rows], device=buf.device))


def _rotations(rows: list[PassRow]) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE cos/sin for the pass: the shared (N, D/2) tables when every row is at the same
    positions (steady state), else one table per row, (B, 1, N, D/2)."""
    first = rows[0].plan
    if all(r.plan.q_cos is first.q_cos for r in rows):
        return first.q_cos, first.q_sin
    return (torch.stack([r.plan.q_cos for r in rows])[:, None], torch.stack([r.plan.q_sin for r in rows])[:, None])


def copy_tokens(cache: torch.Tensor, index: torch.Tensor, new: torch.Tensor) -> None:
    """`cache.index_copy_(1, index, new)` for (heads, tokens, head_dim) buffers, moving 8-byte
    words: the same bytes, a quarter of the elements in bf16.

    Why: index_copy's CUDA kernel moves one element per thread, and a pass writes every
    layer's keys and values (300 copies a 480x832 chunk, 8.4 ms on an H100 in
    longlive-h100-2026-12-07-wave6-flash-profile.json); a key row of 128 bf16 values is 32
    words. Falls back to element copies when a view as words is not possible."""
    try:
        cache, new = cache.view(torch.int64), new.view(torch.int64)
    except RuntimeError:  # a last dimension that is not whole words, or strided
        pass
    cache.index_copy_(1, index, new)


def _write_kv(store: KVStore, layer: int, rows: list[PassRow], write, k: torch.Tensor, v: torch.Tensor) -> None:
    for j, r in enumerate(rows):
        copy_tokens(store.cache_k[layer, r.row], write[j], k[j])
        copy_tokens(store.cache_v[layer, r.row], write[j], v[j])


def _shared_read(rows: list[PassRow], fns: list[tuple]) -> tuple[int, int, int] | None:
    """(first row, end row, keys) when one attention call can serve every row of the pass: the
    rows are consecutive store rows, each reads the same prefix of its window (`n_valid` keys,
    no gather) with dense attention, and every row runs the same function at every layer.

    Why: one session's attention leaves the GPU part idle. A 480x832 chunk's 4,680 queries
    are 37 tiles of 128 per head, 444 tiles for 12 heads: 3.4 waves on an H100's 132 SMs, so
    its last wave runs two thirds empty; a 320x576 chunk's 204 tiles are 1.5 waves. A call per
    session pays that tail once per session and layer; one batched call pays it once. Each row's
    result is the same kernel's (batch rows are independent tiles), so the rows' outputs do not
    change with the batch (a CUDA test checks it on the device)."""
    span = _contiguous(rows)
    first = rows[0].plan
    if span is None or any(
        r.plan.read_index is not None or r.plan.n_valid != first.n_valid
        or not isinstance(r.router, DenseRouter) or fns[j] != fns[0]
        for j, r in enumerate(rows)
    ):
        return None
    return span[0], span[1], first.n_valid


def _attend(store: KVStore, layer: int, rows: list[PassRow], write, fns: list[tuple],
            q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
            shared: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Each row writes its keys/values into its own window and attends to the keys its plan
    reads (the window and itself), with its router's function for this layer: all rows in
    one call when `shared` (from `_shared_read`) says they can."""
    if shared is not None:
        start, end, n_keys = shared
        _write_kv(store, layer, rows, write, k, v)
        # (rows, heads, keys, head_dim) views of the store: no copy
        return fns[0][layer](q, store.cache_k[layer, start:end, :, :n_keys], store.cache_v[layer, start:end, :, :n_keys])
    outs = []
    for j, r in enumerate(rows):
        ck, cv = store.cache_k[layer, r.row], store.cache_v[layer, r.row]  # (heads, tokens, head_dim)
        copy_tokens(ck, write[j], k[j])
        copy_tokens(cv, write[j], v[j])
        plan = r.plan
        if plan.read_index is None:
            keys, values = ck[:, : plan.n_valid], cv[:, : plan.n_valid]
        else:
            keys, values = ck.index_select(1, plan.read_index), cv.index_select(1, plan.read_index)
        r.router.set_query_position(plan.own_start)
        outs.append(fns[j][layer](q[j : j + 1], keys[None], values[None]))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def use_disk_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Keep Inductor's compiled kernels and FX graphs on disk across restarts: in `cache_dir`,
    else $TORCHINDUCTOR_CACHE_DIR if set, else `DEFAULT_INDUCTOR_CACHE`. Returns the folder."""
    if cache_dir is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir).expanduser())
    else:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(DEFAULT_INDUCTOR_CACHE.expanduser()))
    folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True  # compiled graphs by content hash, reused across processes
    return folder
