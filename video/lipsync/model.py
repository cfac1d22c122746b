"""MuseTalk 1.5 as three stock library models and the maths that joins them.

One forward (`MuseTalk.inpaint`) re-draws the lower half of 256×256 face crops so the
mouth says the audio: the crop with its lower half blacked out and the crop itself are
encoded by the VAE (8 latent channels), the UNet runs *once* at timestep 0 with the audio
tokens as cross-attention context (MuseTalk is single-step latent inpainting, not a
diffusion sampler), and the VAE decodes the predicted latents. The models are diffusers'
`UNet2DConditionModel` and `AutoencoderKL` and transformers' `WhisperEncoder`, exactly the
classes the released weights were trained in, so nothing here re-implements a layer.

Two details follow the released inference code (musetalk/utils/utils.py, scripts/
inference.py) rather than the training code, because inference is what the released
weights are judged with: a sinusoidal position encoding over the 50 audio tokens is added
before the UNet (`PositionalEncoding(d_model=384)`), and latents come from the posterior
*mean* (inference samples the posterior, whose spread at this VAE is far below a colour
step; the mean makes the stage deterministic, which the tests rely on).

Whisper's hidden states are computed by our loop over transformers' own layers
(`whisper_hidden_states`) instead of `output_hidden_states=True`, whose exact contents
changed between transformers 4 and 5: MuseTalk (transformers 4.39) stacks the embeddings,
the outputs of layers 1..L-1 and the final layer-normed output of layer L.

With `autoencoder="taesd"` the VAE is diffusers' `AutoencoderTiny` (TAESD): it was distilled
to map images to and from the same *scaled* latents the UNet works in, so the UNet and its
inputs are unchanged and only the two image ↔ latent passes get cheaper (and less exact).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import AUDIO_FRAMES_AFTER, AUDIO_FRAMES_BEFORE, CROP_SIZE, MuseTalkConfig

__all__ = ["MuseTalk", "audio_position_encoding", "build_on_meta", "whisper_hidden_states"]


def audio_position_encoding(tokens: int, dim: int) -> torch.Tensor:
    """(tokens, dim) sin/cos table: sin on even channels, cos on odd, periods 10000^(2i/dim)."""
    position = torch.arange(tokens, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(tokens, dim)
    table[:, 0::2] = torch.sin(position * inv)
    table[:, 1::2] = torch.cos(position * inv)
    return table


def whisper_hidden_states(encoder: nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """(B, positions, layers + 1, d_model) hidden states of transformers' `WhisperEncoder`.

    `mel`: (B, n_mels, 2 · max_source_positions) log-mel windows (30 s at 100 frames/s).
    Stacked: the embeddings (conv stem + positions), the output of every layer but the last,
    and the last layer's output after the final LayerNorm (transformers 4.x semantics).
    """
    act = nn.functional.gelu
    x = act(encoder.conv2(act(encoder.conv1(mel)))).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    states = [x]
    for layer in encoder.layers:
        out = layer(x, None)
        x = out[0] if isinstance(out, tuple) else out
        states.append(x)
    states[-1] = encoder.layer_norm(x)
    return torch.stack(states, dim=2)


class MuseTalk(nn.Module):
    """UNet + VAE + Whisper encoder of MuseTalk 1.5; weights + maths, no runtime state.

    Submodule names are the released files' key roots: `unet.<key>` is `unet.pth`'s
    `<key>`, `vae.<key>` the VAE file's (after the legacy attention rename of
    `checkpoint.convert_vae_state`), `whisper.<key>` the Whisper file's `model.encoder.<key>`.
    """

    def __init__(self, cfg: MuseTalkConfig) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        self.cfg = cfg
        self.unet = UNet2DConditionModel(**cfg.unet_kwargs())
        self.vae = (AutoencoderTiny if cfg.autoencoder == "taesd" else AutoencoderKL)(**cfg.vae_kwargs())
        self.whisper = WhisperEncoder(WhisperConfig(**cfg.whisper_kwargs()))
        self.register_buffer("audio_pe", torch.empty(cfg.audio_tokens, cfg.audio_dim), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """(Re)compute the non-persistent position table where the weights are: a model built
        on the meta device and then loaded or materialised has none yet."""
        device = self.unet.conv_in.weight.device
        if device.type != "meta":
            self.audio_pe = audio_position_encoding(*self.audio_pe.shape).to(device)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    # ---- audio ----------------------------------------------------------------------

    @torch.no_grad()
    def audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1500, layers, d) Whisper hidden states of (B, 80, 3000) log-mel windows."""
        mel = mel.to(device=self.device, dtype=self.whisper.conv1.weight.dtype)
        return whisper_hidden_states(self.whisper, mel)

    def audio_tokens(self, windows: torch.Tensor) -> torch.Tensor:
        """(T, 10, layers, d) per-frame feature windows → (T, 10 · layers, d) UNet context.

        Tokens are ordered position-major (all layers of position 0, then position 1, ...)
        as MuseTalk flattens them, and the position encoding is added.
        """
        t, positions, layers, dim = windows.shape
        assert positions == AUDIO_FRAMES_BEFORE + AUDIO_FRAMES_AFTER, positions
        tokens = windows.reshape(t, positions * layers, dim)
        return tokens + self.audio_pe.to(tokens.dtype)

    # ---- images ---------------------------------------------------------------------

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 256, 256) in [-1, 1] → scaled latents (N, 4, 32, 32): the posterior mean
        (sd-vae), or TAESD's own estimate of it."""
        encoded = self.vae.encode(images)
        if self.cfg.autoencoder == "taesd":
            return encoded.latents * self.cfg.vae_scaling
        return encoded.latent_dist.mode() * self.cfg.vae_scaling

    def predict_latents(self, sample: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The UNet's single step at timestep 0: (T, 8, 32, 32) + audio tokens → (T, 4, 32, 32)."""
        timestep = torch.zeros((), device=sample.device, dtype=torch.long)
        return self.unet(sample, timestep, encoder_hidden_states=context).sample

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → images in [-1, 1]."""
        return self.vae.decode(latents / self.cfg.vae_scaling).sample.clamp(-1.0, 1.0)

    @torch.no_grad()
    def inpaint(self, crops: torch.Tensor, tokens: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Re-draw the lower half of face crops for the given audio tokens.

        `crops`: (T, 3, 256, 256) in [-1, 1] (RGB); `tokens`: (T, N, d) from `audio_tokens`.
        Returns (T, 3, 256, 256) in [-1, 1]. The UNet sees the crop with its lower half
        set to black (-1) and a reference face, both as latents: each crop itself (MuseTalk's
        inference), or one `reference` crop (1, 3, 256, 256) for all of them (one encode
        instead of T; MuseTalk trains with a reference taken from another frame).
        """
        crops = crops.to(device=self.device, dtype=self.dtype)
        masked = crops.clone()
        masked[:, :, CROP_SIZE // 2 :, :] = -1.0
        t = crops.shape[0]
        if reference is None:
            latents = self.encode_latents(torch.cat([masked, crops]))
            sample = torch.cat([latents[:t], latents[t:]], dim=1)
        else:
            latents = self.encode_latents(torch.cat([masked, reference.to(masked)]))
            sample = torch.cat([latents[:t], latents[t:].expand(t, -1, -1, -1)], dim=1)
        predicted = self.predict_latents(sample, tokens.to(device=self.device, dtype=self.dtype))
        return self.decode_latents(predicted)


def build_on_meta(cfg: MuseTalkConfig) -> MuseTalk:
    """The model with no storage (shapes only): for layout checks and strict loading."""
    with torch.device("meta"):
        model = MuseTalk(cfg)
    return model
