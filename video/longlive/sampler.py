"""Streaming generation: one chunk of latent frames at a time, forever.

Per chunk (LongLive's `causal_inference.py` loop, rewritten for a static cache):
1. fresh noise from the session's seeded generator;
2. `steps` denoising passes at the (warped) timesteps; between passes the x0 estimate is
   re-noised to the next timestep with fresh noise;
3. one refresh pass with the clean chunk at t = context_noise (0), so the cache holds the
   clean chunk's keys/values for the chunks after it;
4. commit the chunk's slot in the KV window.

The refresh pass only prepares the cache for the chunks after this one, so
`next_chunk(defer_refresh=True)` returns the chunk's latents before it and runs it at the
start of the next call (or at the next prompt switch): a caller that decodes and shows the
chunk right away gets its frames one pass earlier (about 60 ms at 480×832 on an H100),
with the same frames and the same cache afterwards.

A prompt switch (`set_prompt` mid-session) re-caches: the window's clean latents are run
again at t = 0 under the new text, oldest first, each seeing the sink and the chunks
before it; the sink is kept (it is the identity anchor).
"""

from __future__ import annotations

import torch

from .model import CausalWanModel, ChunkPlan
from .scheduler import denoising_timesteps, flow_to_x0, renoise


class StreamingSampler:
    """Drives a `CausalWanModel` chunk by chunk with a KV window. One session at a time."""

    def __init__(self, model: CausalWanModel, *, steps: int | None = None, seed: int = 0) -> None:
        self.model = model
        self.cfg = model.cfg
        self.timesteps = denoising_timesteps(self.cfg, steps)
        self.seed = seed
        self.generator: torch.Generator | None = None
        self.has_prompt = False
        self.pending: tuple[torch.Tensor, ChunkPlan] | None = None  # chunk whose refresh waits

    @property
    def device(self) -> torch.device:
        return self.model.patch_embedding.weight.device

    def start(self, latent_h: int, latent_w: int, *, batch: int = 1, seed: int | None = None) -> None:
        """Allocate caches for this frame size and reseed; the session begins empty."""
        if seed is not None:
            self.seed = seed
        cfg = self.cfg
        self.model.setup_caches(batch, latent_h, latent_w)
        self.shape = (batch, cfg.in_dim, cfg.num_frame_per_block, latent_h, latent_w)
        n_slots = cfg.local_attn_size // cfg.num_frame_per_block
        # Clean latents of every cache slot: what a re-cache runs again under a new prompt.
        self.clean = torch.zeros((n_slots, *self.shape), device=self.device)
        self.t_tensors = [torch.full((batch,), t, device=self.device) for t in self.timesteps]
        self.t_context = torch.full((batch,), float(cfg.context_noise), device=self.device)
        self.reset()

    def reset(self) -> None:
        """Empty the cache and restart the noise stream from the seed (prompt stays)."""
        self.model.reset_caches()
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.chunks_done = 0
        self.pending = None

    # ---- conditioning ---------------------------------------------------------------------

    @torch.no_grad()
    def set_prompt(self, context: torch.Tensor, *, recache: bool = True) -> None:
        """Switch the text conditioning; with frames already made, re-cache the window."""
        if not (recache and self._pending_in_ring()):
            self.flush()  # a pending refresh runs under the prompt its chunk was made with
        self.model.set_prompt(context.to(self.device))
        self.has_prompt = True
        if recache and (self.chunks_done or self.pending is not None):
            self.recache()

    def _pending_in_ring(self) -> bool:
        return self.pending is not None and self.pending[1].slot >= self.model.window.sink_chunks

    @torch.no_grad()
    def recache(self) -> None:
        """Rewrite the window's K/V under the current prompt, keeping the sink.

        A chunk whose refresh is pending is committed without it when it sits in the ring:
        the re-cache rewrites it anyway (a sink chunk, never re-cached, is refreshed)."""
        if self._pending_in_ring():
            x0, plan = self.pending
            self.pending = None
            self._commit(x0, plan)
        self.flush()
        for plan in self.model.window.recache_plans():
            self.refresh(self.clean[plan.slot], plan)

    @torch.no_grad()
    def prime_sink(self, latents: torch.Tensor) -> None:
        """Write given clean latents (e.g. the persona's reference image, VAE-encoded) as the
        session's first chunk: it becomes the sink every later chunk attends to, and no
        re-cache rewrites it. Must come before any generated chunk."""
        if self.chunks_done or self.pending is not None:
            raise RuntimeError("prime_sink must come before the first generated chunk")
        if tuple(latents.shape) != self.shape:
            raise ValueError(f"sink latents must be {self.shape}, got {tuple(latents.shape)}")
        plan = self.model.begin_chunk()
        latents = latents.to(self.device)
        self.refresh(latents, plan)
        self._commit(latents, plan)

    # ---- the loop -------------------------------------------------------------------------

    def noise(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self.generator, device=self.device)

    @torch.no_grad()
    def denoise_step(self, x: torch.Tensor, index: int, plan: ChunkPlan) -> torch.Tensor:
        """One denoising pass: the x0 estimate from x at timesteps[index]."""
        t = self.timesteps[index]
        flow = self.model.forward_chunk(x, self.t_tensors[index], plan, timestep_hint=t)
        return flow_to_x0(flow, x.float(), t)

    @torch.no_grad()
    def refresh(self, x0: torch.Tensor, plan: ChunkPlan) -> None:
        """The clean-context pass: run x0 at t = context_noise to write its K/V."""
        self.model.forward_chunk(x0, self.t_context, plan, refresh=True, timestep_hint=float(self.cfg.context_noise))

    @torch.no_grad()
    def next_chunk(self, *, defer_refresh: bool = False) -> torch.Tensor:
        """The next chunk's clean latents, (B, C, num_frame_per_block, h, w) float32.

        `defer_refresh`: return before the chunk's clean refresh pass; it runs at the start
        of the next call, at a prompt switch, or on `flush()`.
        """
        if not self.has_prompt:
            raise RuntimeError("set_prompt before generating")
        self.flush()
        plan = self.model.begin_chunk()
        x = self.noise()
        last = len(self.timesteps) - 1
        for i in range(len(self.timesteps)):
            x0 = self.denoise_step(x, i, plan)
            if i < last:
                x = renoise(x0, self.noise(), self.timesteps[i + 1])
        if defer_refresh:
            self.pending = (x0, plan)
        else:
            self.refresh(x0, plan)
            self._commit(x0, plan)
        return x0

    @torch.no_grad()
    def flush(self) -> None:
        """Run the deferred refresh pass, if any, so the cache holds every chunk made."""
        if self.pending is not None:
            x0, plan = self.pending
            self.pending = None
            self.refresh(x0, plan)
            self._commit(x0, plan)

    def _commit(self, x0: torch.Tensor, plan: ChunkPlan) -> None:
        self.model.window.commit(plan)
        self.clean[plan.slot].copy_(x0)
        self.chunks_done += 1
