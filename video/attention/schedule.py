"""What a timestep threshold can reach: LongLive's warped steps and the attention they cover.

LongLive (like Self-Forcing) lists its denoising steps as indices [1000, 750, 500, 250] and,
with `warp_denoising_step`, replaces each index i by the flow-matching scheduler's timestep at
position 1000 - i of its 1000-step training schedule: sigma = 1 - position / 1000, shifted by
sigma' = shift * sigma / (1 + (shift - 1) * sigma) with shift 5.0, timestep = 1000 * sigma'.
That maps the list to [1000, 937.5, 833.3, 625], so `t < 800` holds only for the last step.
Each chunk also runs one clean KV-refresh pass (t = 0), which stays dense by design.

Plain arithmetic, no torch: the docs and the benchmark quote these numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

LONGLIVE_STEPS = (1000, 750, 500, 250)
LONGLIVE_SHIFT = 5.0
NUM_TRAIN_TIMESTEPS = 1000


def warped_timesteps(
    steps: Sequence[int] = LONGLIVE_STEPS, shift: float = LONGLIVE_SHIFT, num_train: int = NUM_TRAIN_TIMESTEPS
) -> list[float]:
    """The timesteps LongLive actually denoises at, for its step indices."""
    out = []
    for step in steps:
        if step == 0:
            out.append(0.0)  # the appended terminal entry of the warped table
            continue
        sigma = 1.0 - (num_train - step) / num_train
        shifted = shift * sigma / (1.0 + (shift - 1.0) * sigma)
        out.append(shifted * num_train)
    return out


def sparse_reach(
    threshold: float,
    num_layers: int = 30,
    dense_layers: int = 4,
    timesteps: Sequence[float] | None = None,
    refresh_passes: int = 1,
) -> dict[str, float]:
    """Share of a chunk's self-attention work the sparse path may touch at `threshold`.

    Every forward pass of a chunk (the denoising steps plus the refresh) has the same
    self-attention cost, so the share is (sparse steps / all passes) x (sparse layers / layers).
    """
    timesteps = list(warped_timesteps() if timesteps is None else timesteps)
    sparse_steps = sum(1 for t in timesteps if t < threshold)
    passes = len(timesteps) + refresh_passes
    layer_share = (num_layers - dense_layers) / num_layers
    return {
        "threshold": threshold,
        "sparse_steps": sparse_steps,
        "passes_per_chunk": passes,
        "attention_share": sparse_steps / passes * layer_share,
    }


def self_attention_flop_share(
    q_tokens: int = 4680, k_tokens: int = 18720, dim: int = 1536, ffn_dim: int = 8960, text_tokens: int = 512
) -> float:
    """Self-attention's share of one Wan DiT block's matmul FLOPs (LongLive 480x832 defaults).

    Counts QK^T and PV (4*Nq*Nk*dim), the q/k/v/o projections, cross-attention (q/o
    projections on the queries, k/v on the text, its QK^T/PV) and the FFN; ignores norms,
    RoPE and modulation, which are small.
    """
    self_attn = 4 * q_tokens * k_tokens * dim
    self_proj = 4 * 2 * q_tokens * dim * dim
    cross = 2 * 2 * q_tokens * dim * dim + 2 * 2 * text_tokens * dim * dim + 4 * q_tokens * text_tokens * dim
    ffn = 2 * 2 * q_tokens * dim * ffn_dim
    return self_attn / (self_attn + self_proj + cross + ffn)
