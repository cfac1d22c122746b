"""TAEW2.1: the tiny autoencoder for Wan 2.1 latents (`taew2_1.pth`, madebyollin/taehv).

About 10M decoder parameters instead of the Wan VAE's ~73M, and only 2-D convolutions, so it
decodes a LongLive chunk in a small fraction of the full VAE's time (benchmarks/longlive.py
measures both). It reads the diffusion model's *normalized* latents directly (no mean/std)
and returns RGB in [0, 1].

Structure (names are the positional `nn.Sequential` indices of the released file,
tests/fixtures/checkpoints/taew2_1.json): 2-D convs plus three temporal pieces —
`MemBlock` (each frame also sees the block's previous input frame), `TPool` (encoder: stride
frames folded into channels by a 1×1 conv) and `TGrow` (decoder: a 1×1 conv unfolding
channels into stride frames). Time is causal, so a stream decodes chunk by chunk with only
one remembered frame per MemBlock, and chunked decoding equals one-shot decoding. The
decoder's first `t_upscale - 1` output frames are warm-up and dropped (so T latents give
4T - 3 frames, the same count as the Wan VAE).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointLayoutError, ModelFamily, named_config

__all__ = [
    "TAEHV",
    "TAEHV_FAMILY",
    "TAEHVConfig",
    "TAEHVDecodeStream",
    "adapt_taehv_state_dict",
    "build_taehv",
    "check_taehv_file",
    "detect_taehv_config",
    "load_taehv",
    "tiny_taehv",
]


@dataclass(frozen=True)
class TAEHVConfig:
    latent_channels: int = 16
    image_channels: int = 3
    encoder_width: int = 64
    decoder_widths: tuple[int, int, int, int] = (256, 128, 64, 64)
    encoder_time_downscale: tuple[bool, bool, bool] = (True, True, False)
    decoder_time_upscale: tuple[bool, bool, bool] = (False, True, True)
    decoder_space_upscale: tuple[bool, bool, bool] = (True, True, True)

    @classmethod
    def from_name(cls, name: str) -> TAEHVConfig:
        return named_config("TAEHV", _PRESETS, name)

    @property
    def t_upscale(self) -> int:
        return 2 ** sum(self.decoder_time_upscale)

    @property
    def t_downscale(self) -> int:
        return 2 ** sum(self.encoder_time_downscale)


_PRESETS = {
    "taew2.1": TAEHVConfig(),
    "tiny": TAEHVConfig(encoder_width=8, decoder_widths=(16, 8, 8, 8)),
}


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the input latents to about ±3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual conv block whose input is the frame concatenated with the previous frame."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in * 2, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TPool(nn.Module):
    def __init__(self, n_f: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f * stride, n_f, 1, bias=False)


class TGrow(nn.Module):
    def __init__(self, n_f: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)


class TAEHV(nn.Module):
    def __init__(self, config: TAEHVConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or TAEHVConfig()
        e = cfg.encoder_width

        def enc_stage(down: bool) -> list[nn.Module]:
            return [
                TPool(e, 2 if down else 1),
                _conv(e, e, stride=2, bias=False),
                MemBlock(e, e),
                MemBlock(e, e),
                MemBlock(e, e),
            ]

        self.encoder = nn.Sequential(
            _conv(cfg.image_channels, e),
            nn.ReLU(),
            *enc_stage(cfg.encoder_time_downscale[0]),
            *enc_stage(cfg.encoder_time_downscale[1]),
            *enc_stage(cfg.encoder_time_downscale[2]),
            _conv(e, cfg.latent_channels),
        )
        n = cfg.decoder_widths
        dec: list[nn.Module] = [Clamp(), _conv(cfg.latent_channels, n[0]), nn.ReLU()]
        for i in range(3):
            dec += [
                MemBlock(n[i], n[i]),
                MemBlock(n[i], n[i]),
                MemBlock(n[i], n[i]),
                nn.Upsample(scale_factor=2 if cfg.decoder_space_upscale[i] else 1),
                TGrow(n[i], 2 if cfg.decoder_time_upscale[i] else 1),
                _conv(n[i], n[i + 1], bias=False),
            ]
        dec += [nn.ReLU(), _conv(n[3], cfg.image_channels)]
        self.decoder = nn.Sequential(*dec)
        self._frames_uint8 = _frames_uint8  # `compile` swaps in the compiled one

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder[1].weight.dtype

    def decode_stream(self) -> TAEHVDecodeStream:
        return TAEHVDecodeStream(self)

    def compile(self, *, backend: str = "inductor") -> None:
        """torch.compile the chunk decode to uint8 frames (an explicit call, for a GPU engine).

        Inductor fuses the ReLUs, residual adds, concatenations and the uint8 conversion
        around the convolutions: 15.1 → 8.2 ms per 480×832 chunk on an H100, within 1/255 of
        the plain path (benchmarks/results/longlive-h100-2026-11-25-profile.json). One graph
        per chunk shape, shared by every stream of this model. (`backend`: torch.compile's;
        tests trace with "eager".)"""
        self._frames_uint8 = torch.compile(_frames_uint8, dynamic=False, backend=backend)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (B, 16, T, h, w) → RGB (B, 3, 4T-3, 8h, 8w) in [0, 1]."""
        return self.decode_stream().decode(latents)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, T, H, W) in [0, 1], T a multiple of 4 → latents (B, 16, T/4, H/8, W/8).

        One shot only (the engine encodes with the full VAE); here so the released
        encoder weights are usable and tested.
        """
        if video.shape[2] % self.config.t_downscale:
            raise ValueError(
                f"TAEHV encodes a multiple of {self.config.t_downscale} frames, got {video.shape[2]}"
            )
        x = _apply(self.encoder, video.to(self.dtype).transpose(1, 2), {})
        return x.transpose(1, 2)


class TAEHVDecodeStream:
    """Decodes one stream chunk by chunk, remembering each MemBlock's last input frame."""

    def __init__(self, model: TAEHV) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.memory: dict[int, torch.Tensor] = {}
        self.to_trim = self.model.config.t_upscale - 1

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """RGB (B, 3, T, H, W) in [0, 1]."""
        x = _apply(self.model.decoder, latents.to(self.model.dtype).transpose(1, 2), self.memory)
        return self._trim(x.clamp_(0.0, 1.0)).transpose(1, 2)

    @torch.no_grad()
    def decode_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """Same, as uint8 frames (B, T, H, W, 3) (compiled after `TAEHV.compile`)."""
        return self._trim(self.model._frames_uint8(self.model.decoder, latents, self.memory))

    def _trim(self, frames: torch.Tensor) -> torch.Tensor:
        """Drop the stream's warm-up frames from (B, T, ...)."""
        if self.to_trim:
            drop = min(self.to_trim, frames.shape[1])
            frames, self.to_trim = frames[:, drop:], self.to_trim - drop
        return frames


def _frames_uint8(decoder: nn.Sequential, latents: torch.Tensor, memory: dict[int, torch.Tensor]) -> torch.Tensor:
    """Latents (B, 16, T, h, w) → untrimmed uint8 frames (B, 4T, 8h, 8w, 3)."""
    x = _apply(decoder, latents.to(decoder[1].weight.dtype).transpose(1, 2), memory)
    return (x.clamp(0.0, 1.0).float() * 255.0).round_().to(torch.uint8).permute(0, 1, 3, 4, 2)


def _apply(seq: nn.Sequential, x: torch.Tensor, memory: dict[int, torch.Tensor]) -> torch.Tensor:
    """Run (B, T, C, H, W) through `seq`, all frames of the chunk at once (time-parallel).

    `memory[i]` is MemBlock i's input frame from the end of the previous chunk (zeros at
    stream start), which is all the state causality needs.
    """
    b, t = x.shape[:2]
    x = x.reshape(b * t, *x.shape[2:])
    for i, layer in enumerate(seq):
        if isinstance(layer, MemBlock):
            frames = x.reshape(b, t, *x.shape[1:])
            prev = memory.get(i)
            prev = torch.zeros_like(frames[:, :1]) if prev is None else prev
            past = torch.cat([prev, frames[:, :-1]], dim=1).reshape(x.shape)
            memory[i] = frames[:, -1:].clone()
            x = layer(x, past)
        elif isinstance(layer, TPool):
            if t % layer.stride:
                raise ValueError(f"TPool at encoder.{i} needs a multiple of {layer.stride} frames, got {t}")
            t //= layer.stride
            x = layer.conv(x.reshape(b * t, layer.stride * x.shape[1], *x.shape[2:]))
        elif isinstance(layer, TGrow):
            c = x.shape[1]
            x = layer.conv(x).reshape(b * t * layer.stride, c, *x.shape[2:])
            t *= layer.stride
        else:
            x = layer(x)
    return x.reshape(b, t, *x.shape[1:])


def adapt_taehv_state_dict(sd: dict[str, torch.Tensor], model: TAEHV) -> dict[str, torch.Tensor]:
    """The one layout change TAEHV allows: a decoder TGrow stored with more output rows.

    A checkpoint trained with a time upscale the model has switched off stores that TGrow
    conv with stride×C rows; the last C rows produce the last (most recent) frame, which is
    what the model keeps (as madebyollin/taehv's `patch_tgrow_layers` does).
    """
    out = dict(sd)
    for i, layer in enumerate(model.decoder):
        if isinstance(layer, TGrow):
            key = f"decoder.{i}.conv.weight"
            rows = layer.conv.weight.shape[0]
            if key in out and out[key].shape[0] > rows and out[key].shape[0] % rows == 0:
                out[key] = out[key][-rows:]
    return out


#: Where each width is read in the released layout (positions of the nn.Sequential).
_WIDTH_KEYS = {
    "encoder_width": ("encoder.0.weight", 0),
    "image_channels": ("encoder.0.weight", 1),
    "latent_channels": ("decoder.1.weight", 1),
    "n0": ("decoder.1.weight", 0),
    "n1": ("decoder.9.conv.0.weight", 0),
    "n2": ("decoder.15.conv.0.weight", 0),
    "n3": ("decoder.20.weight", 0),
}


def detect_taehv_config(shapes: dict[str, torch.Tensor]) -> TAEHVConfig:
    """The channel widths a TAEHV checkpoint was built with, read from its shapes.

    Only widths are read (encoder width, the four decoder widths, latent and image
    channels); the time/space up- and down-scaling flags keep TAEW2.1's values (they create
    no parameters, or are covered by `adapt_taehv_state_dict`). A file that is not a TAEHV
    at all fails later, in the strict key check.
    """
    try:
        got = {name: int(shapes[key].shape[axis]) for name, (key, axis) in _WIDTH_KEYS.items()}
    except KeyError as exc:
        raise CheckpointLayoutError(f"not a TAEHV checkpoint: it has no {exc.args[0]!r}") from None
    return TAEHVConfig(
        latent_channels=got["latent_channels"],
        image_channels=got["image_channels"],
        encoder_width=got["encoder_width"],
        decoder_widths=(got["n0"], got["n1"], got["n2"], got["n3"]),
    )


def _meta_taehv(cfg: TAEHVConfig) -> TAEHV:
    with torch.device("meta"):
        return TAEHV(cfg)


#: TAEHV checkpoints: sizes read from the widths, TGrow rows adapted (video/decoders/checkpoint.py).
TAEHV_FAMILY: ModelFamily[TAEHVConfig, TAEHV] = ModelFamily(
    what="TAEHV", presets=_PRESETS, detect=detect_taehv_config, build_meta=_meta_taehv,
    adapt=adapt_taehv_state_dict,
)


def build_taehv(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float16,
                config: str | TAEHVConfig = "taew2.1", seed: int = 0) -> TAEHV:
    """A random-weight TAEHV built on meta and materialized on `device` (for benchmarks)."""
    return TAEHV_FAMILY.build(device, dtype, config, seed)


def tiny_taehv(seed: int = 0) -> TAEHV:
    """The real structure with widths 8–16, float32 on CPU, for tests."""
    return build_taehv("cpu", torch.float32, "tiny", seed)


def load_taehv(path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float16,
               config: str | TAEHVConfig | None = None) -> TAEHV:
    """Load `taew2_1.pth` / `.safetensors` strictly (after `adapt_taehv_state_dict`).

    `config` None: the widths are read from the file (`detect_taehv_config`); a name or
    config: the file must match it."""
    return TAEHV_FAMILY.load(path, device, dtype, config)


def check_taehv_file(path, config: str | TAEHVConfig | None = None) -> list[str]:
    """Layout problems of a `taew2_1.pth` / `.safetensors` (reads no weights)."""
    return TAEHV_FAMILY.check_file(path, config)
