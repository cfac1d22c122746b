"""The Wan 2.1 video VAE (`Wan2.1_VAE.pth`), written for streaming.

Module names follow the original Wan `WanVAE_` so the released file loads strictly with no
converter (tests/fixtures/checkpoints/wan2.1_vae.json). It compresses 4× in time and 8× in
space to 16 latent channels; time is causal: video frame 0 maps to latent frame 0 alone,
then every 4 frames to one latent.

Streaming. Every temporal convolution is causal, so decoding a long video one chunk at a time
gives exactly the frames of decoding it in one go, provided each causal conv remembers the
last two frames it saw. That memory lives in a `StreamCache` (a dict from module to tensor),
not in the modules, so one set of weights can serve several streams. The original code and
diffusers feed the decoder one latent frame at a time; we feed a whole LongLive chunk
(3 latent frames) per call, which is the same computation in fewer, larger kernels.

Latent normalisation (mean/std per channel, not in the checkpoint) maps VAE latents to the
space the diffusion model works in: `normalized = (mu - mean) / std`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointLayoutError, ModelFamily, named_config

__all__ = [
    "WAN_VAE_FAMILY",
    "WanVAE",
    "WanVAEConfig",
    "WanVAEDecodeStream",
    "build_wan_vae",
    "check_wan_vae_file",
    "detect_wan_vae_config",
    "load_wan_vae",
    "tiny_wan_vae",
]

# Per-channel latent statistics from Wan's `WanVAE` wrapper (also diffusers' `latents_mean/std`).
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

#: A stream's memory: causal conv → its last input frames; upsampler → "started" marker.
StreamCache = dict


@dataclass(frozen=True)
class WanVAEConfig:
    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)  # [sic], Wan's spelling
    latent_mean: tuple[float, ...] = WAN21_LATENT_MEAN
    latent_std: tuple[float, ...] = WAN21_LATENT_STD

    @classmethod
    def from_name(cls, name: str) -> WanVAEConfig:
        return named_config("Wan VAE", _PRESETS, name)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_PRESETS = {
    "wan2.1-vae": WanVAEConfig(),
    # Same structure (the diffusers converter and our key names depend on it), tiny widths.
    "tiny": WanVAEConfig(dim=8),
}


# --- layers -------------------------------------------------------------------------------


class CausalConv3d(nn.Conv3d):
    """Conv3d padded only on the past side in time; the stream cache replaces that padding."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        pt, ph, pw = self.padding
        self._time_pad = 2 * pt
        self._space_pad = (pw, pw, ph, ph)
        self.padding = (0, 0, 0)

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        pad_t = self._time_pad
        if pad_t and cache is not None:
            prev = cache.get(self)
            if prev is not None:
                x = torch.cat([prev.to(x.dtype), x], dim=2)
                pad_t = max(0, pad_t - prev.shape[2])
            # clone: keep two frames, not a view that pins the whole chunk in memory
            cache[self] = x[:, :, -self._time_pad :].clone()
        return super().forward(F.pad(x, (*self._space_pad, pad_t, 0)))


class RMSNorm(nn.Module):
    """Channel-first RMS norm with a learned gain (`gamma`); computed in float32."""

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=1) * self.scale).type_as(x) * self.gamma


class Upsample2x(nn.Module):
    """Nearest 2× spatial upsampling, done in float (bf16 nearest is not supported everywhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").type_as(x)


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D module to every frame of a (B, C, T, H, W) tensor."""
    b, c, t, h, w = x.shape
    y = fn(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # Positions matter: the checkpoint names residual.0/.2/.3/.6.
        self.residual = nn.Sequential(
            RMSNorm(in_dim),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim),
            nn.SiLU(),
            nn.Dropout(0.0),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _frame(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, 1, c * 3, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.squeeze(1).transpose(1, 2).reshape(n, c, h, w))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        return x + _per_frame(self._frame, x)


class Resample(nn.Module):
    """2× spatial resampling, plus 2× in time for the `*3d` modes (causal, first frame alone)."""

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=(0, 0, 0))

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            x = self._grow_time(x, cache)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            x = self._shrink_time(x, cache)
        return x

    def _grow_time(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        # The stream's first frame passes through untouched (it becomes video frame 0);
        # every later frame becomes two, from a causal conv that never sees frame 0.
        head = None
        if self not in cache:
            cache[self] = True
            head, x = x[:, :, :1], x[:, :, 1:]
        if x.shape[2]:
            b, c, t, h, w = x.shape
            y = self.time_conv(x, cache).reshape(b, 2, c, t, h, w)
            x = y.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        return x if head is None else torch.cat([head, x], dim=2)

    def _shrink_time(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        # Frame 0 passes through; later frames are pooled in pairs by a stride-2 conv that
        # also sees the frame before the pair (kept in the cache between calls).
        head = None
        if self not in cache:
            head, x = x[:, :, :1], x[:, :, 1:]
            cache[self] = head
        if x.shape[2]:
            if x.shape[2] % 2:
                raise ValueError(
                    "Wan VAE encoder: after the first frame, feed frames in multiples of 4 "
                    f"(got a run of {x.shape[2]} at a 2x time downsample)"
                )
            prev = cache[self]
            cache[self] = x[:, :, -1:].clone()
            x = self.time_conv(torch.cat([prev, x], dim=2))
        return x if head is None else torch.cat([head, x], dim=2)


def _run(seq: nn.Sequential, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
    for layer in seq:
        if isinstance(layer, (ResidualBlock, AttentionBlock, Resample, CausalConv3d)):
            x = layer(x, cache)
        else:
            x = layer(x)
    return x


class Encoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(cfg.dim_mult) - 1:
                blocks.append(
                    Resample(out_dim, "downsample3d" if cfg.temperal_downsample[i] else "downsample2d")
                )
        self.downsamples = nn.Sequential(*blocks)
        self.middle = nn.Sequential(
            ResidualBlock(out_dim, out_dim), AttentionBlock(out_dim), ResidualBlock(out_dim, out_dim)
        )
        self.head = nn.Sequential(
            RMSNorm(out_dim), nn.SiLU(), CausalConv3d(out_dim, cfg.z_dim * 2, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        return _run(self.head, x, cache)


class Decoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig) -> None:
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.dim * u for u in (mult[-1], *mult[::-1])]
        temporal_up = cfg.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0])
        )
        blocks: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                in_dim //= 2  # each upsampler halves the channels it hands on
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != len(mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temporal_up[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*blocks)
        self.head = nn.Sequential(RMSNorm(out_dim), nn.SiLU(), CausalConv3d(out_dim, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, cache: StreamCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        return _run(self.head, x, cache)


# --- model --------------------------------------------------------------------------------


class WanVAE(nn.Module):
    """Encoder, decoder and the two 1×1×1 convs around the latent (`conv1`, `conv2`)."""

    def __init__(self, config: WanVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or WanVAEConfig()
        z = self.config.z_dim
        if len(self.config.latent_mean) != z or len(self.config.latent_std) != z:
            raise ValueError(f"latent_mean/latent_std need {z} values each")
        self.encoder = Encoder3d(self.config)
        self.conv1 = CausalConv3d(z * 2, z * 2, 1)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder3d(self.config)

    # latent statistics are config constants, created on use (no buffers: meta-safe)
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(self.config.latent_mean, device=like.device, dtype=torch.float32).view(shape)
        std = torch.tensor(self.config.latent_std, device=like.device, dtype=torch.float32).view(shape)
        return mean, std

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(mu)
        return ((mu.float() - mean) / std).to(mu.dtype)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return (z.float() * std + mean).to(z.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, 1+4k, H, W) in [-1, 1] → normalized latent means (B, z, 1+k, H/8, W/8).

        Fed as Wan does (frame 0, then runs of 4) so memory stays that of 4 frames.
        """
        t = video.shape[2]
        if (t - 1) % 4:
            raise ValueError(f"Wan VAE encodes 1+4k frames, got {t}")
        video = video.to(self.dtype)
        cache: StreamCache = {}
        outs = [self.encoder(video[:, :, :1], cache)]
        outs += [self.encoder(video[:, :, i : i + 4], cache) for i in range(1, t, 4)]
        mu = self.conv1(torch.cat(outs, dim=2))[:, : self.config.z_dim]
        return self.normalize(mu)

    @torch.no_grad()
    def encode_reference(self, image: np.ndarray, height: int, width: int) -> torch.Tensor:
        """One RGB uint8 (H, W, 3) image → normalized latents (1, z, 1, height/8, width/8).

        The image is scaled to cover height×width and centre-cropped, so the persona is not
        squashed. Used to anchor identity in the sink frames.
        """
        if height % 8 or width % 8:
            raise ValueError(f"reference size must be a multiple of 8, got {width}x{height}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"reference image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        pixels = _cover_resize(image, height, width)
        x = torch.from_numpy(pixels).to(self.conv2.weight.device).permute(2, 0, 1).float()
        x = (x / 127.5 - 1.0)[None, :, None]
        return self.encode(x)

    def decode_stream(self) -> WanVAEDecodeStream:
        return WanVAEDecodeStream(self)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (B, z, T, h, w) → video (B, 3, 1+4(T-1), 8h, 8w) in [-1, 1]."""
        return self.decode_stream().decode(latents)


class WanVAEDecodeStream:
    """Decodes one video chunk by chunk; the causal caches carry over between calls.

    The first call's first latent frame yields one video frame, every other latent frame
    four: a LongLive stream of 3-latent chunks gives 9 frames, then 12 per chunk.
    """

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        self.cache: StreamCache = {}

    def reset(self) -> None:
        self.cache = {}

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = self.vae.denormalize(latents.to(self.vae.dtype))
        x = self.vae.decoder(self.vae.conv2(z), self.cache)
        return x.clamp_(-1.0, 1.0)

    def decode_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """Same, as uint8 frames (B, T, H, W, 3), ready to encode or send."""
        x = self.decode(latents)
        return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1)


def _cover_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    img = Image.fromarray(image).resize((rw, rh), Image.Resampling.LANCZOS)
    top, left = (rh - height) // 2, (rw - width) // 2
    return np.array(img.crop((left, top, left + width, top + height)))  # writable copy


# --- builders -----------------------------------------------------------------------------


def detect_wan_vae_config(shapes: dict[str, torch.Tensor]) -> WanVAEConfig:
    """The base width (`dim`) and latent channels a Wan VAE checkpoint has, from its shapes.

    The rest of the structure (width multipliers, residual blocks, which stages halve time)
    is Wan 2.1's and is then checked key by key. Only 16-channel latents are accepted: the
    per-channel normalisation statistics exist for those alone.
    """
    try:
        dim = int(shapes["encoder.conv1.weight"].shape[0])
        z_dim = int(shapes["conv2.weight"].shape[0])
    except KeyError as exc:
        raise CheckpointLayoutError(f"not a Wan VAE checkpoint: it has no {exc.args[0]!r}") from None
    if z_dim != len(WAN21_LATENT_MEAN):
        raise CheckpointLayoutError(
            f"Wan VAE with {z_dim} latent channels: only {len(WAN21_LATENT_MEAN)} (Wan 2.1's) are supported"
        )
    return WanVAEConfig(dim=dim, z_dim=z_dim)


def _meta_wan_vae(cfg: WanVAEConfig) -> WanVAE:
    with torch.device("meta"):
        return WanVAE(cfg)


#: Wan VAE checkpoints: base width and latent channels read from the shapes (checkpoint.py).
WAN_VAE_FAMILY: ModelFamily[WanVAEConfig, WanVAE] = ModelFamily(
    what="Wan VAE", presets=_PRESETS, detect=detect_wan_vae_config, build_meta=_meta_wan_vae,
)


def build_wan_vae(device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                  config: str | WanVAEConfig = "wan2.1-vae", seed: int = 0) -> WanVAE:
    """A random-weight VAE, built on meta and materialized on `device` (for benchmarks)."""
    return WAN_VAE_FAMILY.build(device, dtype, config, seed)


def tiny_wan_vae(seed: int = 0) -> WanVAE:
    """The real structure at base width 8 (~0.9M parameters), float32 on CPU, for tests."""
    return build_wan_vae("cpu", torch.float32, "tiny", seed)


def load_wan_vae(path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                 config: str | WanVAEConfig | None = None) -> WanVAE:
    """Load `Wan2.1_VAE.pth` strictly (raises `CheckpointLayoutError` naming bad keys).

    `config` None: the widths are read from the file (`detect_wan_vae_config`)."""
    return WAN_VAE_FAMILY.load(path, device, dtype, config)


def check_wan_vae_file(path, config: str | WanVAEConfig | None = None) -> list[str]:
    """Layout problems of a `Wan2.1_VAE.pth` (for `persona models check`; reads no weights)."""
    return WAN_VAE_FAMILY.check_file(path, config)
