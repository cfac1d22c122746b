"""Conditioning-level transitions: move the prompt embedding, not the pixels.

When a directive changes the prompt, a hard switch of the text embedding makes LongLive jump
(the new prompt's first chunk can look like a cut). Instead the engine moves the embedding
from where it is to the new prompt's over `steps` chunks, one step per chunk, and re-caches
the KV window (keeping the sink) with each intermediate embedding.

Interpolation is per token: the direction is slerped on the unit sphere and the norm is
interpolated linearly, so intermediate tokens keep a realistic magnitude (a plain lerp of two
dissimilar tokens shrinks toward zero, which the DiT has never seen). Padding tokens are
exactly zero (Wan zeroes embeddings past the prompt length); a token that is zero on either
side has no direction, so it is lerped instead — it fades in or out, and stays exactly zero
where both prompts are padding.

Interrupting is free: a new target set mid-blend starts from the embedding in effect now,
so the conditioning never jumps.
"""

from __future__ import annotations

import torch

from .easing import ease

__all__ = ["ConditioningBlender", "slerp_tokens"]

_EPS = 1e-6


def slerp_tokens(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Per-token slerp of direction and lerp of norm between (..., L, D) embeddings.

    Exact endpoints: t <= 0 gives `a`, t >= 1 gives `b`. Computed in float32, returned in
    `a`'s dtype.
    """
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if t <= 0.0:
        return a.clone()
    if t >= 1.0:
        return b.to(a.dtype, copy=True)
    af, bf = a.float(), b.float()
    na, nb = af.norm(dim=-1, keepdim=True), bf.norm(dim=-1, keepdim=True)
    ua, ub = af / na.clamp_min(_EPS), bf / nb.clamp_min(_EPS)
    cos = (ua * ub).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos)
    sin_omega = torch.sin(omega)
    # Nearly parallel tokens: slerp weights tend to lerp weights.
    near = sin_omega < 1e-4
    safe = torch.where(near, torch.ones_like(sin_omega), sin_omega)
    wa = torch.where(near, torch.full_like(omega, 1.0 - t), torch.sin((1.0 - t) * omega) / safe)
    wb = torch.where(near, torch.full_like(omega, t), torch.sin(t * omega) / safe)
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    slerped = direction * ((1.0 - t) * na + t * nb)
    lerped = (1.0 - t) * af + t * bf
    # No direction on one side (padding), or opposite directions (no unique great circle).
    use_lerp = (na <= _EPS) | (nb <= _EPS) | (cos < -1.0 + 1e-4)
    return torch.where(use_lerp, lerped, slerped).to(a.dtype)


class ConditioningBlender:
    """The text embedding in effect, moved toward a target one step per chunk.

    Engine loop: `set_target(new_embedding)` when the prompt changes; then once per chunk
    `embedding, changed = blender.step()`, switching the prompt when `changed` (LongLive
    re-caches its KV window when the blend arrives: video/longlive/settings.py BLEND_RECACHE).
    """

    def __init__(self, initial: torch.Tensor, steps: int = 4, easing: str = "smoothstep") -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        ease(easing, 0.0)  # unknown names fail here, listing the known ones
        self.default_steps = steps
        self.easing = easing
        self.current = initial
        self._start = initial
        self.target = initial
        self._steps = 0
        self._done = 0

    @property
    def blending(self) -> bool:
        return self._done < self._steps

    @property
    def progress(self) -> float:
        """Fraction of the current blend done (1.0 when at rest)."""
        return 1.0 if not self.blending else self._done / self._steps

    def set_target(self, embedding: torch.Tensor, steps: int | None = None) -> None:
        """Blend to `embedding` from the embedding in effect now (mid-blend included).

        `steps=0` switches at the next `step()`.
        """
        if embedding.shape != self.current.shape:
            raise ValueError(f"target shape {tuple(embedding.shape)} != current {tuple(self.current.shape)}")
        steps = self.default_steps if steps is None else steps
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self._start = self.current
        self.target = embedding
        self._steps = max(steps, 1)
        self._done = 0

    def state(self) -> tuple:
        """Everything `step` changes, to be put back with `restore` (a chunk taken again)."""
        return (self.current, self._start, self.target, self._steps, self._done)

    def restore(self, state: tuple) -> None:
        """Back to a `state()`, keeping the target set since: the step is taken again toward it."""
        current, start, target, steps, done = state
        if target is self.target:
            self.current, self._start, self._steps, self._done = current, start, steps, done
        else:  # a new target came meanwhile: blend to it from where the chunk began
            self.current = current
            self._start = current
            self._done = 0

    def step(self) -> tuple[torch.Tensor, bool]:
        """Advance one chunk; returns (embedding for this chunk, whether it changed)."""
        if not self.blending:
            return self.current, False
        self._done += 1
        if self._done >= self._steps:
            self.current = self.target
        else:
            t = ease(self.easing, self._done / self._steps)
            self.current = slerp_tokens(self._start, self.target, t)
        return self.current, True
