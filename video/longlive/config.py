"""The frozen architecture preset of the DiT (STYLE.md house rule 2).

`WanConfig` is what the weights fix (dims, heads, layers) plus LongLive's sampling
constants; a user never edits it, they pick a preset by exact name, or
let the loader detect it from the checkpoint's shapes (`checkpoint.detect_preset`). What a user may set
lives in `settings.py` (pydantic); this module imports nothing but the standard library,
so the GPU benchmark runs with torch alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ...errors import PersonaError


class UnknownPresetError(PersonaError, KeyError):
    """A preset name that is not one of `WanConfig.PRESETS`."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class WanConfig:
    """Architecture of a (causal) Wan DiT plus LongLive's sampling constants.

    Field names follow the checkpoint's constructor arguments (see the `config` block of
    tests/fixtures/checkpoints/longlive_generator_wan2.1_t2v_1.3b.json).
    """

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_theta: float = 10000.0
    # LongLive streaming constants (create no parameters)
    local_attn_size: int = 12  # latent frames of keys a chunk sees, sink included
    sink_size: int = 3  # first latent frames kept forever
    num_frame_per_block: int = 3  # latent frames per chunk
    timestep_shift: float = 5.0
    denoising_step_list: tuple[int, ...] = (1000, 750, 500, 250)
    warp_denoising_step: bool = True
    context_noise: int = 0  # timestep of the clean KV-refresh pass
    vae_stride: tuple[int, int, int] = (4, 8, 8)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def window_frames(self) -> int:
        """Latent frames in the rolling (non-sink) part of the cache, current chunk included."""
        return self.local_attn_size - self.sink_size

    def __post_init__(self) -> None:
        assert self.dim % self.num_heads == 0, "dim must split into heads"
        assert self.head_dim % 2 == 0, "RoPE needs an even head_dim"
        assert self.window_frames % self.num_frame_per_block == 0, "window must hold whole chunks"
        assert self.sink_size % self.num_frame_per_block == 0, "sink must be whole chunks"

    @classmethod
    def from_name(cls, name: str) -> WanConfig:
        """The preset called exactly `name`; an unknown name lists the known ones."""
        try:
            return cls(**PRESETS[name])
        except KeyError:
            raise UnknownPresetError(
                f"unknown Wan preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
            ) from None

    def replace(self, **changes: Any) -> WanConfig:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return WanConfig(**values)


PRESETS: dict[str, dict[str, Any]] = {
    # The released LongLive generator (NVlabs/LongLive v1.0, Wan2.1-T2V-1.3B base).
    "wan2.1-t2v-1.3b": {},
    # For CPU tests: same structure, tiny sizes (2 layers, 2 heads of 16).
    "tiny": {
        "dim": 32,
        "ffn_dim": 64,
        "num_heads": 2,
        "num_layers": 2,
        "freq_dim": 16,
        "text_dim": 24,
        "text_len": 8,
        "in_dim": 4,
        "out_dim": 4,
    },
    # The DiT of `testing.write_tiny_models`: tiny, but it fits the tiny UMT5 (d_model 32)
    # and the 16-channel decoders, so a whole engine loads from a models directory.
    "tiny-engine": {
        "dim": 32,
        "ffn_dim": 64,
        "num_heads": 2,
        "num_layers": 2,
        "freq_dim": 16,
        "text_dim": 32,
        "text_len": 32,
        "in_dim": 16,
        "out_dim": 16,
    },
}
