"""`StreamingSampler`: one session's stream driven alone, synchronously, chunk by chunk.

The same queue of passes as the batched host (`stream.SessionStream`), run one pass at a time
on the runtime (row 0 of a store of its own size). Tests and benchmarks use it where a single
stream is the point (cache equals a full recompute, re-cache semantics, pass timings); the
engine serves sessions through `host.EngineHost`, which batches the same passes.
"""

from __future__ import annotations

import torch

from .model import CausalWanModel
from .runtime import EngineRuntime
from .stream import RecacheMode, RecacheTiming, SessionStream


class StreamingSampler:
    """Drives one `SessionStream` on an `EngineRuntime` (built around `model` if given one)."""

    def __init__(self, model: CausalWanModel | EngineRuntime, *, steps: int | None = None, seed: int = 0,
                 recache_mode: RecacheMode = "stock", row: int = 0) -> None:
        self.runtime = model if isinstance(model, EngineRuntime) else EngineRuntime(model)
        self.model = self.runtime.model
        self.cfg = self.model.cfg
        self.steps, self.seed, self.recache_mode, self.row = steps, seed, recache_mode, row
        self.stream: SessionStream | None = None

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def start(self, latent_h: int, latent_w: int, *, seed: int | None = None, router=None) -> None:
        """Set up the buffers for this frame size and begin an empty session from the seed."""
        if seed is not None:
            self.seed = seed
        self.runtime.setup(self.row + 1, latent_h, latent_w)
        self.stream = SessionStream(self.runtime, self.row, steps=self.steps, seed=self.seed,
                                    recache_mode=self.recache_mode)
        if router is not None:
            self.stream.router = router

    def _s(self) -> SessionStream:
        if self.stream is None:
            raise RuntimeError("start(latent_h, latent_w) first")
        return self.stream

    # ---- what the stream holds ------------------------------------------------------------

    @property
    def window(self):
        return self._s().window

    @property
    def shape(self) -> tuple[int, ...]:
        return self._s().shape

    @property
    def timesteps(self) -> list[float]:
        return self._s().timesteps

    @property
    def clean(self) -> torch.Tensor:
        return self._s().clean

    @property
    def chunks_done(self) -> int:
        return self._s().chunks_done

    @property
    def cache_k(self) -> torch.Tensor:
        """This session's keys, (layers, heads, window tokens, head_dim) (a view of the store)."""
        return self.runtime.store.cache_k[:, self.row]

    @property
    def cache_v(self) -> torch.Tensor:
        return self.runtime.store.cache_v[:, self.row]

    @property
    def text_k(self) -> torch.Tensor:
        return self.runtime.store.text_k[:, self.row]

    # ---- driving --------------------------------------------------------------------------

    def reset(self) -> None:
        """Empty the window and restart the noise stream from the seed (the prompt stays)."""
        self._s().reset()

    @torch.no_grad()
    def set_prompt(self, context: torch.Tensor, *, recache: bool = True, timing: RecacheTiming = "before") -> None:
        """Switch the text conditioning; with frames made and `recache`, re-cache the window
        (now, with "before"; after the next chunk, with "after")."""
        self._s().set_prompt(context, recache=recache, timing=timing)
        if timing == "before":
            self.flush()

    @torch.no_grad()
    def recache(self) -> None:
        """Re-cache the window under the current prompt now."""
        self._s().recache()
        self.flush()

    @torch.no_grad()
    def prime_sink(self, latents: torch.Tensor) -> None:
        """Write `latents` as the session's first (sink) chunk (see `SessionStream.prime_sink`)."""
        self._s().prime_sink(latents)
        self.flush()

    @torch.no_grad()
    def next_chunk(self, *, defer_refresh: bool = False) -> torch.Tensor:
        """The next chunk's clean latents, (1, C, num_frame_per_block, h, w) float32.

        `defer_refresh`: return before the chunk's clean refresh pass (or the re-cache an
        "after" switch queued behind it); it runs at the start of the next call or on `flush()`.
        """
        stream = self._s()
        stream.request_chunk()
        while True:
            row = stream.next_pass()
            assert row is not None, "the chunk was queued"
            latents = stream.pass_done(self.runtime.run([row])[0])
            if latents is not None:
                break
        if not defer_refresh:
            self.flush()
        return latents

    @torch.no_grad()
    def flush(self) -> None:
        """Run every pass still owed (a deferred refresh, a re-cache)."""
        stream = self._s()
        while (row := stream.next_pass()) is not None:
            stream.pass_done(self.runtime.run([row])[0])

    @torch.no_grad()
    def restart_chunk(self, context: torch.Tensor | None = None) -> bool:
        return self._s().restart_chunk(context)
