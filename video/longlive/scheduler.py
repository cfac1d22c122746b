"""LongLive's few-step flow-matching schedule: which timesteps, and the x0 / re-noise maths.

The released model was distilled with *warped* timesteps (docs/longlive.md has the evidence):
the list [1000, 750, 500, 250] indexes a 1000-entry shifted schedule, giving
sigma = shift*s / (1 + (shift-1)*s) for s = 1, .75, .5, .25, i.e. t = 1000, 937.5, 833.3, 625
at shift 5. Everything here is float32 maths on host floats; nothing syncs the device.
"""

from __future__ import annotations

import torch

from .config import WanConfig

NUM_TRAIN_TIMESTEPS = 1000


def shifted_sigma(s: float, shift: float) -> float:
    """The flow-matching time shift (SD3 / Wan): stretches the schedule towards high noise."""
    return shift * s / (1 + (shift - 1) * s)


def warp_timestep(raw: int, shift: float) -> float:
    """Map a raw list entry (1000, 750...) through the shifted 1000-step training schedule.

    The training schedule has sigma_i = shifted(1 - i/1000) for i = 0..999 (sigma_min 0,
    one extra step dropped), followed by an appended 0; entry `raw` picks index 1000 - raw.
    """
    if not 0 <= raw <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"timestep {raw} is outside 0..{NUM_TRAIN_TIMESTEPS}")
    index = NUM_TRAIN_TIMESTEPS - raw
    if index == NUM_TRAIN_TIMESTEPS:
        return 0.0
    return NUM_TRAIN_TIMESTEPS * shifted_sigma(1 - index / NUM_TRAIN_TIMESTEPS, shift)


def denoising_timesteps(cfg: WanConfig, steps: int | None = None) -> list[float]:
    """The timesteps (0..1000 scale) the model is run at for each chunk, first `steps` of them."""
    raw = list(cfg.denoising_step_list)[: steps or len(cfg.denoising_step_list)]
    if cfg.warp_denoising_step:
        return [warp_timestep(r, cfg.timestep_shift) for r in raw]
    return [float(r) for r in raw]


def sigma_of(t: float) -> float:
    """Noise level of timestep t: the schedule stores timesteps = 1000 * sigma."""
    return t / NUM_TRAIN_TIMESTEPS


def flow_to_x0(flow: torch.Tensor, xt: torch.Tensor, t: float) -> torch.Tensor:
    """x_t = (1-s) x0 + s noise and the model predicts noise - x0, so x0 = x_t - s * flow."""
    return xt - sigma_of(t) * flow


def renoise(x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
    s = sigma_of(t)
    return (1 - s) * x0 + s * noise
