"""One session's stream as a queue of passes: what LongLive's inference loop does, one pass at a time.

Per chunk (LongLive's `causal_inference.py` loop, rewritten for a static cache):
1. fresh noise from the session's seeded generator;
2. `steps` denoising passes at the (warped) timesteps; between passes the x0 estimate is
   re-noised to the next timestep with fresh noise;
3. one refresh pass with the clean chunk at t = context_noise (0), so the cache holds the
   clean chunk's keys/values for the chunks after it;
4. commit the chunk's slot in the KV window.

The chunk's latents are handed out after step 2: the refresh pass only prepares the cache for
the *next* chunk, so it is queued, not waited for (a caller decodes and shows the chunk one
pass sooner; the same frames and cache result).

A `SessionStream` does not run anything by itself: `next_pass()` says which pass the session
needs next (doing the instant work in front of it: committing a chunk, setting the prompt's
text K/V, shifting the ring), the caller runs it, possibly batched with other sessions'
(`runtime.EngineRuntime.run`), and hands the output to `pass_done()`. `StreamingSampler`
(sampler.py) drives one stream alone; `host.EngineHost` drives many together. Both go
through this one queue, which is why a session's frames do not depend on who shares its passes.

Prompt switches re-cache the window under the new text. Two semantics (`recache_mode`):
- "stock": LongLive v1.0's `_recache_after_switch`: one unmasked pass over the last
  min(local_attn_size, t) frames; while no frame has left the window that includes the sink,
  which is rewritten under the new prompt (after, the sink is kept). The released weights
  were tuned with this behaviour, so it is the default.
- "causal": ours before: one block-causal pass per window chunk, oldest first, each seeing the
  sink and the chunks before it; the sink is never rewritten (an identity anchor stays exactly
  as primed).
And two timings (`set_prompt(..., timing=...)`): "before" the next chunk (LongLive's order),
or "after" it: the first chunk under the new prompt is denoised over the window as the old
prompt left it, and the re-cache follows it (the change shows one re-cache sooner).

A chunk in flight can be restarted (`restart_chunk`): from the same noise (the generator is
put back), keeping its ring shift. An interrupt uses it to stop within one pass and continue
later without a gap; a directive uses it to redo the chunk under the new prompt.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch

from .runtime import DENSE, EngineRuntime, PassRow
from .scheduler import denoising_timesteps, flow_to_x0, renoise
from .window import ChunkPlan, KVWindow

RecacheMode = Literal["stock", "causal"]
RecacheTiming = Literal["before", "after"]
RECACHE_MODES: tuple[str, ...] = ("stock", "causal")
RECACHE_TIMINGS: tuple[str, ...] = ("before", "after")


def checked_recache_mode(mode: str) -> RecacheMode:
    if mode not in RECACHE_MODES:
        raise ValueError(f"recache_mode must be 'stock' or 'causal', got {mode!r}")
    return mode  # type: ignore[return-value]


def checked_recache_timing(timing: str) -> RecacheTiming:
    if timing not in RECACHE_TIMINGS:
        raise ValueError(f"recache must be 'before' or 'after', got {timing!r}")
    return timing  # type: ignore[return-value]


# --------------------------------------------------------------------------- queued work


@dataclass
class _Text:
    """Instant: set the row's text K/V (queued so it lands after the passes before it)."""

    context: torch.Tensor


@dataclass
class _Clean:
    """A clean pass over latents already made: a chunk's refresh (then commit), a re-cache pass
    (no commit), or the sink prime (refresh, then commit)."""

    plan: ChunkPlan
    x: torch.Tensor
    commit: bool


@dataclass
class _Commit:
    """Instant: the chunk is in the cache without its own refresh (a re-cache rewrites it)."""

    plan: ChunkPlan
    x0: torch.Tensor


@dataclass
class _Recache:
    """Expands, when it reaches the front, into the re-cache passes of the window as it is then."""

    in_flight: ChunkPlan | None = None


@dataclass
class _Chunk:
    """A chunk: begun (ring shift, plan, noise) when it reaches the front, then denoised."""

    plan: ChunkPlan | None = None
    noise: torch.Tensor | None = None
    gen_state: torch.Tensor | None = None  # the generator just after the noise was drawn
    x: torch.Tensor | None = None
    step: int = 0
    switched: bool = False  # first chunk under a new prompt, "after" timing: re-cache after it
    asked: bool = False  # the begin hook was asked for this chunk's prompt


class PromptSwitch(NamedTuple):
    """What a begin or restart hook may answer instead of a bare embedding: the prompt, and
    whether the switch re-caches the window (False for a blend's intermediate step, whose
    prompt the next chunk replaces: its re-cache would be rewritten by the next one)."""

    context: torch.Tensor
    recache: bool = True


def _switch(value: torch.Tensor | PromptSwitch) -> PromptSwitch:
    return value if isinstance(value, PromptSwitch) else PromptSwitch(value)


@dataclass
class StreamCounters:
    passes: int = 0
    recache_passes: int = 0
    chunks: int = 0
    restarts: int = 0


@dataclass
class SessionStream:
    """One session's generation state in a row of the runtime's store (see the module docstring)."""

    runtime: EngineRuntime
    row: int
    steps: int | None = None
    seed: int = 0
    recache_mode: RecacheMode = "stock"
    router: object = DENSE
    #: Called when a chunk begins: the prompt embedding for it (or a `PromptSwitch`), or None to
    #: keep the current one.
    begin_hook: Callable[[], torch.Tensor | PromptSwitch | None] | None = None
    timing: RecacheTiming = "after"
    counters: StreamCounters = field(default_factory=StreamCounters)

    def __post_init__(self) -> None:
        store = self.runtime._require_store()
        cfg = self.runtime.model.cfg
        self.recache_mode = checked_recache_mode(self.recache_mode)
        self.timing = checked_recache_timing(self.timing)
        self.cfg = cfg
        self.window = KVWindow(store.geometry)
        h, w = store.latent_hw
        self.shape = (1, cfg.in_dim, cfg.num_frame_per_block, h, w)
        self.timesteps = denoising_timesteps(cfg, self.steps)
        self._next_timesteps: list[float] | None = None  # set_steps during a chunk: from the next one
        self.device = self.runtime.device
        # Clean latents of every cache slot: what a re-cache runs again under a new prompt.
        self.clean = torch.zeros((store.geometry.n_slots, *self.shape), device=self.device)
        self.queue: deque = deque()
        self.has_prompt = False
        self.reset()

    # ---- lifecycle ------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> None:
        """Empty the window, forget queued work and restart the noise stream (the prompt stays)."""
        if seed is not None:
            self.seed = seed
        self.window.reset()
        self.runtime.store.clear_row(self.row)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.queue.clear()
        self.chunks_done = 0
        self.last_switched = False  # whether the last chunk out was the first under a new prompt
        self.last_estimate: torch.Tensor | None = None  # the latest x0 estimate (previews)
        self._switch_next = False  # an "after" switch made between chunks: re-cache after the next one

    def set_steps(self, steps: int | None) -> None:
        """Denoising steps from the next chunk on: the chunk in flight keeps its schedule (fewer
        steps than it has already taken would leave it no next pass)."""
        timesteps = denoising_timesteps(self.cfg, steps)
        if self.chunk_in_flight is None:
            self.timesteps, self._next_timesteps = timesteps, None
        else:
            self._next_timesteps = timesteps

    @property
    def idle(self) -> bool:
        return not self.queue

    @property
    def chunk_in_flight(self) -> _Chunk | None:
        """The chunk being denoised (begun, not finished), if any."""
        for item in self.queue:
            if isinstance(item, _Chunk) and item.plan is not None:
                return item
        return None

    @property
    def owes_work(self) -> bool:
        """Passes queued that no chunk waits for yet (a refresh or a re-cache after a chunk)."""
        return bool(self.queue) and not any(isinstance(i, _Chunk) for i in self.queue)

    @property
    def chunks_queued(self) -> int:
        """Chunks asked for (`request_chunk`) whose latents have not come out yet."""
        return sum(isinstance(i, _Chunk) for i in self.queue)

    @property
    def switch_in_flight(self) -> bool:
        """The chunk in flight is the first under a new prompt with its re-cache after it."""
        chunk = self.chunk_in_flight
        return chunk is not None and chunk.switched

    def passes_to_latents(self) -> int:
        """Passes before the next chunk's latents come out (the queue as it stands; a re-cache
        counts one pass per window chunk in causal mode, one in stock mode)."""
        n = 0
        ring = self.window.geometry.ring_chunks
        for item in self.queue:
            if isinstance(item, _Clean):
                n += 1
            elif isinstance(item, _Recache):
                n += ring if self.recache_mode == "causal" else 1
            elif isinstance(item, _Chunk):
                return n + len(self.timesteps) - item.step
        return n

    # ---- what callers ask for -------------------------------------------------------------

    def set_prompt(self, context: torch.Tensor, *, recache: bool = True, timing: RecacheTiming | None = None) -> None:
        """Switch the text conditioning for the chunks not yet begun.

        With frames already made and `recache`, the window is re-cached under the new text:
        before the next chunk, or ("after" timing) right after it. A refresh still owed by the
        last chunk runs under the prompt it was made with, unless the re-cache rewrites it."""
        timing = checked_recache_timing(timing or self.timing)
        unbegun = next((i for i, item in enumerate(self.queue) if isinstance(item, _Chunk) and item.plan is None),
                       len(self.queue))
        self._queue_switch(unbegun, context, recache=recache, timing=timing, in_flight=None)
        self.has_prompt = True

    def recache(self) -> None:
        """Re-cache the window under the current prompt (a refresh owed by a window chunk is
        skipped: the re-cache rewrites it)."""
        self._skip_rewritten_refresh(len(self.queue))
        self.queue.append(_Recache())

    def request_chunk(self) -> None:
        """Queue one more chunk; its latents come out of `pass_done` after its last denoising pass."""
        if not self.has_prompt and self.begin_hook is None:
            raise RuntimeError("set_prompt before generating")
        self.queue.append(_Chunk(switched=self._switch_next))
        self._switch_next = False

    def prime_sink(self, latents: torch.Tensor) -> None:
        """Write given clean latents (e.g. the persona's reference image, VAE-encoded) as the
        session's first chunk: the sink every later chunk attends to. Must come first."""
        if self.chunks_done or any(not isinstance(item, _Text) for item in self.queue):
            raise RuntimeError("prime_sink must come before the first generated chunk")
        if tuple(latents.shape) != self.shape:
            raise ValueError(f"sink latents must be {self.shape}, got {tuple(latents.shape)}")
        self.queue.append(_Clean(self.window.next_plan(), latents.to(self.device).float(), commit=True))

    def restart_chunk(self, context: torch.Tensor | PromptSwitch | None = None) -> bool:
        """Start the chunk in flight again from its first denoising pass, from the same noise,
        keeping its ring shift; with `context`, under that prompt (its re-cache placed by the
        stream's timing). False when no chunk is in flight."""
        chunk = self.chunk_in_flight
        if chunk is None:
            return False
        chunk.x, chunk.step = chunk.noise, 0
        self.generator.set_state(chunk.gen_state)
        self.counters.restarts += 1
        if context is not None:
            switch = _switch(context)
            index = self.queue.index(chunk)
            self._queue_switch(index, switch.context, recache=switch.recache, timing=self.timing,
                               in_flight=chunk.plan, chunk=chunk)
        return True

    # ---- the pass loop --------------------------------------------------------------------

    def next_pass(self) -> PassRow | None:
        """The next pass this session needs, or None when it has nothing queued. Instant work at
        the front of the queue (prompt text, commits, ring shifts) is done here."""
        while self.queue:
            item = self.queue[0]
            if isinstance(item, _Text):
                self.runtime.set_text(self.row, item.context)
                self.queue.popleft()
            elif isinstance(item, _Commit):
                self._commit(item.plan, item.x0)
                self.queue.popleft()
            elif isinstance(item, _Recache):
                self.queue.popleft()
                for plan, x in reversed(self._recache_passes(item.in_flight)):
                    self.queue.appendleft(_Clean(plan, x, commit=False))
            elif isinstance(item, _Clean):
                return PassRow(self.row, item.plan, item.x, float(self.cfg.context_noise), False, self.router)
            elif isinstance(item, _Chunk):
                if item.plan is None and self._begin(item):
                    continue  # the begin hook queued a prompt switch in front of the chunk
                return PassRow(self.row, item.plan, item.x, self.timesteps[item.step], True, self.router)
        return None

    def pass_done(self, out: torch.Tensor | None) -> torch.Tensor | None:
        """Advance past the pass `next_pass` gave; the chunk's clean latents (1, C, f, h, w)
        float32 when that was its last denoising pass, else None."""
        item = self.queue[0]
        self.counters.passes += 1
        if isinstance(item, _Clean):
            self.queue.popleft()
            if item.commit:
                self._commit(item.plan, item.x)
            else:
                self.counters.recache_passes += 1
            return None
        assert isinstance(item, _Chunk) and out is not None
        t = self.timesteps[item.step]
        x0 = flow_to_x0(out, item.x.float(), t)
        self.last_estimate = x0
        item.step += 1
        if item.step < len(self.timesteps):
            item.x = renoise(x0, self._noise(), self.timesteps[item.step])
            return None
        self.queue.popleft()
        self.counters.chunks += 1
        self.last_switched = item.switched
        if item.switched:  # "after": the window (this chunk included) is re-cached right behind it
            self.queue.appendleft(_Recache())
            in_ring = item.plan.slot >= self.window.geometry.sink_chunks
            # A ring chunk is rewritten by the re-cache; a sink chunk keeps its own refresh.
            self.queue.appendleft(_Commit(item.plan, x0) if in_ring else _Clean(item.plan, x0, commit=True))
        else:
            self.queue.appendleft(_Clean(item.plan, x0, commit=True))
        return x0

    # ---- internals ------------------------------------------------------------------------

    def _noise(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, device=self.device)

    def _begin(self, chunk: _Chunk) -> bool:
        """Ask the begin hook for this chunk's prompt (True: a switch was queued in front of it,
        run that first), then shift the ring, plan the chunk and draw its noise."""
        if self.begin_hook is not None and not chunk.asked:
            chunk.asked = True
            context = self.begin_hook()
            if context is not None:
                switch = _switch(context)
                self._queue_switch(self.queue.index(chunk), switch.context, recache=switch.recache,
                                   timing=self.timing, in_flight=None, chunk=chunk)
                self.has_prompt = True
                if self.queue[0] is not chunk:
                    return True
        if not self.has_prompt:
            raise RuntimeError("set_prompt before generating")
        if self._next_timesteps is not None:
            self.timesteps, self._next_timesteps = self._next_timesteps, None
        plan = self.window.next_plan()
        self.runtime.shift(self.row, self.window.shift_rows())
        chunk.plan = plan
        chunk.noise = self._noise()
        chunk.gen_state = self.generator.get_state()
        chunk.x = chunk.noise
        return False

    def _queue_switch(self, index: int, context: torch.Tensor, *, recache: bool, timing: RecacheTiming,
                      in_flight: ChunkPlan | None, chunk: _Chunk | None = None) -> None:
        """Queue a prompt switch at `index` (before a chunk not yet begun, or before the chunk in
        flight being restarted), with its re-cache placed by `timing`."""
        has_frames = self.chunks_done > 0 or any(isinstance(i, (_Clean, _Commit)) for i in list(self.queue)[:index])
        items: list = [_Text(context)]
        if recache and has_frames and timing == "before":
            self._skip_rewritten_refresh(index)
            items.append(_Recache(in_flight))
        elif recache and has_frames and timing == "after":
            if chunk is None:  # a switch between chunks: the next chunk re-caches after itself
                chunk = next((i for i in list(self.queue)[index:] if isinstance(i, _Chunk)), None)
            if chunk is None:
                self._switch_next = True
            else:
                chunk.switched = True
        for item in reversed(items):
            self.queue.insert(index, item)

    def _skip_rewritten_refresh(self, index: int) -> None:
        """A refresh owed (before `index`) by a window chunk becomes a bare commit: the re-cache
        that follows rewrites that chunk anyway (a sink chunk keeps its refresh)."""
        for i, item in enumerate(list(self.queue)[:index]):
            if isinstance(item, _Clean) and item.commit and len(item.plan.slots) == 1 \
                    and item.plan.slot >= self.window.geometry.sink_chunks:
                self.queue[i] = _Commit(item.plan, item.x)

    def _recache_passes(self, in_flight: ChunkPlan | None) -> list[tuple[ChunkPlan, torch.Tensor]]:
        if self.recache_mode == "causal":
            plans = self.window.causal_recache_plans(in_flight)
        else:
            plan = self.window.stock_recache_plan(in_flight)
            plans = [plan] if plan is not None else []
        return [(plan, torch.cat([self.clean[s] for s in plan.slots], dim=2)) for plan in plans]

    def _commit(self, plan: ChunkPlan, x0: torch.Tensor) -> None:
        self.window.commit(plan)
        self.clean[plan.slot].copy_(x0)
        self.chunks_done += 1

