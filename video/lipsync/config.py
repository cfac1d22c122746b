"""The frozen architecture of MuseTalk 1.5 and its companions, as named presets.

MuseTalk 1.5 (TMElyralab, MIT code and weights) is three released files, each a stock
library model (STYLE.md house rule 2: presets by exact name, the weights fix them):

- the UNet (`musetalkV15/unet.pth` + `musetalk.json`): diffusers' `UNet2DConditionModel`
  with Stable Diffusion v1's layout, 8 input channels (4 masked-face latents + 4 reference
  latents), 4 output channels, cross-attention width 384 (Whisper-tiny's hidden size);
- the image autoencoder (`sd-vae/`, stabilityai/sd-vae-ft-mse, MIT): diffusers'
  `AutoencoderKL`, 256×256 RGB ↔ 4×32×32 latents, scaled by 0.18215; or, as a faster
  option (`autoencoder="taesd"`), TAESD (`taesd/`, madebyollin/taesd, MIT): diffusers'
  `AutoencoderTiny`, a small network distilled to encode to and decode from the same scaled
  latent space (so the UNet is unchanged), at a fraction of the work and a lower fidelity;
- the audio encoder (`whisper/`, openai/whisper-tiny, MIT): transformers' Whisper; only
  its encoder runs, and all of its hidden states (embeddings + each layer) are used.

Values are those of the public `musetalk.json`, `sd-vae/config.json` and
`whisper/config.json` (docs/lipsync.md says where each one comes from). A config file
placed beside a weight file is read instead (`checkpoint.py`), so the tiny random set of
`testing.write_tiny_lipsync_models` carries its own sizes; the strict load then checks every
key and shape either way. This module imports only the standard library (and the error root).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...errors import PersonaError

__all__ = [
    "AUDIO_FRAMES_AFTER",
    "AUTOENCODERS",
    "AUDIO_FRAMES_BEFORE",
    "CROP_SIZE",
    "PRESETS",
    "WHISPER_FRAME_MS",
    "WHISPER_RATE",
    "MuseTalkConfig",
    "UnknownLipSyncPresetError",
    "preset_with",
]

#: The face crop the UNet inpaints: 256×256 RGB (32×32 latents).
CROP_SIZE = 256
#: Whisper reads 16 kHz audio; its encoder makes one position per 20 ms (50 per second).
WHISPER_RATE = 16_000
WHISPER_FRAME_MS = 20.0
#: The audio a video frame at time t sees: Whisper positions from 80 ms before t to 120 ms
#: after it (10 positions). MuseTalk's training pads 2·2 positions on the left and takes
#: `2·(2 + 2 + 1)` from frame f's position 2f at 25 fps (musetalk/utils/utils.py,
#: `process_audio_features`): [2f − 4, 2f + 6) on the unpadded 50 Hz axis.
AUDIO_FRAMES_BEFORE = 4
AUDIO_FRAMES_AFTER = 6
#: The image autoencoders MuseTalk's latents can go through: its own (exact) or TAESD (fast).
AUTOENCODERS = ("sd-vae", "taesd")


class UnknownLipSyncPresetError(PersonaError, KeyError):
    """A preset name that is not one of `PRESETS`."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _json(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class MuseTalkConfig:
    """Constructor arguments of the three models, frozen (hashable, comparable).

    `unet`: `diffusers.UNet2DConditionModel(**unet)`; `vae`: `diffusers.AutoencoderKL(**vae)`;
    `whisper`: `transformers.WhisperConfig(**whisper)`; `vae_scaling`: the latent scale.
    `autoencoder`: "sd-vae" (`vae` are `diffusers.AutoencoderKL` arguments) or "taesd"
    (`diffusers.AutoencoderTiny` arguments; its latents are already scaled: scale 1).
    Use `unet_kwargs()` etc. for plain dicts.
    """

    name: str
    unet: str = field(repr=False)  # JSON, keys sorted: frozen, hashable, exact
    vae: str = field(repr=False)
    whisper: str = field(repr=False)
    vae_scaling: float = 0.18215
    autoencoder: str = "sd-vae"

    @classmethod
    def make(cls, name: str, unet: dict, vae: dict, whisper: dict, vae_scaling: float = 0.18215,
             autoencoder: str = "sd-vae") -> MuseTalkConfig:
        return cls(name, _json(unet), _json(vae), _json(whisper), vae_scaling, autoencoder)

    @classmethod
    def from_name(cls, name: str) -> MuseTalkConfig:
        try:
            return PRESETS[name]
        except KeyError:
            raise UnknownLipSyncPresetError(
                f"unknown lip-sync preset {name!r}; known: {', '.join(sorted(PRESETS))}"
            ) from None

    def unet_kwargs(self) -> dict[str, Any]:
        return json.loads(self.unet)

    def vae_kwargs(self) -> dict[str, Any]:
        return json.loads(self.vae)

    def whisper_kwargs(self) -> dict[str, Any]:
        return json.loads(self.whisper)

    def replace(self, **parts: dict) -> MuseTalkConfig:
        """A copy with some of `unet`, `vae`, `whisper` given as plain dicts (read from files)."""
        kwargs = {"unet": self.unet_kwargs(), "vae": self.vae_kwargs(), "whisper": self.whisper_kwargs(), **parts}
        return MuseTalkConfig.make(self.name, vae_scaling=self.vae_scaling, autoencoder=self.autoencoder, **kwargs)

    @property
    def audio_dim(self) -> int:
        """Width of one audio token: Whisper's d_model, the UNet's cross-attention width."""
        return int(self.whisper_kwargs()["d_model"])

    @property
    def audio_layers(self) -> int:
        """Hidden states stacked per Whisper position: the embeddings and each encoder layer."""
        return int(self.whisper_kwargs()["encoder_layers"]) + 1

    @property
    def audio_tokens(self) -> int:
        """Cross-attention tokens per video frame: 10 positions × `audio_layers`."""
        return (AUDIO_FRAMES_BEFORE + AUDIO_FRAMES_AFTER) * self.audio_layers

    @property
    def latent_factor(self) -> int:
        """Pixels per latent: 2 ** (number of autoencoder blocks − 1)."""
        vae = self.vae_kwargs()
        return 2 ** (len(vae.get("block_out_channels") or vae["encoder_block_out_channels"]) - 1)


# --------------------------------------------------------------------------- presets
# musetalkV15/musetalk.json (TMElyralab/MuseTalk on Hugging Face).
_UNET_15 = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
# stabilityai/sd-vae-ft-mse config.json (diffusers 0.4.2; scaling_factor is diffusers' default).
_VAE_SD = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
# madebyollin/taesd config.json (diffusers' AutoencoderTiny defaults: 64 channels, 4 blocks).
_VAE_TAESD = {
    "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64],
    "encoder_block_out_channels": [64, 64, 64, 64],
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1],
    "num_encoder_blocks": [1, 3, 3, 3],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}
# openai/whisper-tiny config.json: the fields that shape the weights, and the token ids the
# config validates against the vocabulary.
_WHISPER_TINY = {
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "vocab_size": 51865,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "pad_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
}

PRESETS: dict[str, MuseTalkConfig] = {
    "musetalk-1.5": MuseTalkConfig.make("musetalk-1.5", _UNET_15, _VAE_SD, _WHISPER_TINY),
    "musetalk-1.5-taesd": MuseTalkConfig.make("musetalk-1.5-taesd", _UNET_15, _VAE_TAESD, _WHISPER_TINY,
                                              vae_scaling=1.0, autoencoder="taesd"),
    # Random tiny models in the same formats, for tests and smoke runs: same block types and
    # counts (so the same key patterns and the same 8× latent factor), narrow widths.
    "tiny": MuseTalkConfig.make(
        "tiny",
        {**_UNET_15, "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 16, "norm_num_groups": 8,
         "layers_per_block": 1, "attention_head_dim": 2},
        {**_VAE_SD, "block_out_channels": [8, 8, 16, 16], "norm_num_groups": 4, "layers_per_block": 1},
        {**_WHISPER_TINY, "d_model": 16, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
         "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 32, "vocab_size": 64,
         "max_target_positions": 16, "pad_token_id": 60, "bos_token_id": 60, "eos_token_id": 60,
         "decoder_start_token_id": 61},
    ),
}
PRESETS["tiny-taesd"] = MuseTalkConfig.make(
    "tiny-taesd", PRESETS["tiny"].unet_kwargs(),
    {**_VAE_TAESD, "encoder_block_out_channels": [8] * 4, "decoder_block_out_channels": [8] * 4},
    PRESETS["tiny"].whisper_kwargs(), vae_scaling=1.0, autoencoder="taesd",
)


def preset_with(name: str, autoencoder: str) -> str:
    """The preset that is `name`'s UNet and Whisper with `autoencoder` (`AUTOENCODERS`)."""
    base = name.removesuffix("-taesd")
    if autoencoder not in AUTOENCODERS:
        raise UnknownLipSyncPresetError(f"unknown autoencoder {autoencoder!r}; known: {', '.join(AUTOENCODERS)}")
    return MuseTalkConfig.from_name(base if autoencoder == "sd-vae" else f"{base}-taesd").name
