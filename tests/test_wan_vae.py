"""Wan 2.1 VAE: real checkpoint layout, strict loading, streaming decode, parity with diffusers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from comfyui_persona.video.decoders.checkpoint import CheckpointLayoutError
from comfyui_persona.video.decoders.wan_vae import (
    WanVAE,
    WanVAEConfig,
    load_wan_vae,
    tiny_wan_vae,
)
from paths import CHECKPOINT_MANIFESTS

MANIFEST = json.loads((CHECKPOINT_MANIFESTS / "wan2.1_vae.json").read_text())


def _perturbed_tiny(seed: int = 0) -> WanVAE:
    """Tiny VAE whose norm gains and biases are not 1/0, so a wrong wiring shows."""
    vae = tiny_wan_vae(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith(("gamma", "bias")):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return vae


def test_meta_built_vae_matches_released_checkpoint_layout():
    with torch.device("meta"):
        vae = WanVAE(WanVAEConfig.from_name("wan2.1-vae"))
    ours = {k: list(v.shape) for k, v in vae.state_dict().items()}
    released = {k: v["shape"] for k, v in MANIFEST["tensors"].items()}
    assert ours == released
    assert sum(p.numel() for p in vae.parameters()) == MANIFEST["total_params"]


def test_latent_statistics_are_wans():
    cfg = WanVAEConfig.from_name("wan2.1-vae")
    assert list(cfg.latent_mean) == MANIFEST["config"]["latent_mean"]
    assert list(cfg.latent_std) == MANIFEST["config"]["latent_std"]


def test_unknown_preset_lists_known_names():
    with pytest.raises(KeyError, match="wan2.1-vae"):
        WanVAEConfig.from_name("wan2.2-vae")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_strict_load_round_trip_reproduces_the_decoder(tmp_path, suffix):
    vae = _perturbed_tiny()
    path = tmp_path / f"vae{suffix}"
    if suffix == ".pth":
        torch.save(vae.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(path))
    loaded = load_wan_vae(path, dtype=torch.float32, config="tiny")
    z = torch.randn(1, 16, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.decode(z), vae.decode(z), rtol=0, atol=0)


def test_load_names_missing_and_misshaped_keys(tmp_path):
    sd = tiny_wan_vae().state_dict()
    del sd["decoder.head.2.bias"]
    sd["conv2.weight"] = torch.zeros(16, 16, 1, 1, 2)
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointLayoutError) as err:
        load_wan_vae(tmp_path / "bad.pth", dtype=torch.float32, config="tiny")
    message = str(err.value)
    assert "decoder.head.2.bias" in message and "conv2.weight" in message and "extra.weight" in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="Wan2.1_VAE.pth"):
        load_wan_vae(tmp_path / "Wan2.1_VAE.pth", config="tiny")


def test_chunked_decode_equals_one_shot_decode():
    vae = _perturbed_tiny()
    z = torch.randn(1, 16, 5, 2, 3, generator=torch.Generator().manual_seed(1))
    whole = vae.decode(z)
    assert whole.shape == (1, 3, 1 + 4 * 4, 16, 24)
    for sizes in ([3, 2], [1] * 5):
        stream = vae.decode_stream()
        parts, start = [], 0
        for n in sizes:
            parts.append(stream.decode(z[:, :, start : start + n]))
            start += n
        torch.testing.assert_close(torch.cat(parts, dim=2), whole, rtol=0, atol=1e-5)


def test_longlive_chunks_decode_to_9_then_12_frames():
    vae = tiny_wan_vae()
    stream = vae.decode_stream()
    z = torch.randn(1, 16, 6, 2, 2)
    counts = [stream.decode_uint8(z[:, :, i : i + 3]).shape[1] for i in range(0, 6, 3)]
    assert counts == [9, 12]
    stream.reset()
    frames = stream.decode_uint8(z[:, :, :3])
    assert frames.shape == (1, 9, 16, 16, 3) and frames.dtype == torch.uint8


def test_decode_and_encode_match_diffusers_autoencoder_kl_wan():
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    vae = _perturbed_tiny(seed=3)
    cfg = vae.config
    ref = AutoencoderKLWan(base_dim=cfg.dim, z_dim=cfg.z_dim).eval()
    ref.load_state_dict(convert_wan_vae_to_diffusers(vae.state_dict()), strict=True)
    mean = torch.tensor(cfg.latent_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latent_std).view(1, -1, 1, 1, 1)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(1, 16, 3, 2, 3, generator=gen)
    video = torch.rand(1, 3, 5, 16, 24, generator=gen) * 2 - 1
    with torch.no_grad():
        expected_video = ref.decode(z * std + mean).sample
        expected_latents = (ref.encode(video).latent_dist.mean - mean) / std
    torch.testing.assert_close(vae.decode(z), expected_video, rtol=0, atol=2e-5)
    torch.testing.assert_close(vae.encode(video), expected_latents, rtol=0, atol=2e-5)


def test_encode_reference_gives_one_latent_frame_of_the_requested_size():
    vae = tiny_wan_vae()
    image = np.random.default_rng(0).integers(0, 256, size=(90, 60, 3), dtype=np.uint8)
    latents = vae.encode_reference(image, height=32, width=48)
    assert latents.shape == (1, 16, 1, 4, 6)
    assert torch.isfinite(latents).all()
    # An image already at the size is used as is: the same as encoding it as video frame 0.
    exact = image[:32, :48]
    frame = torch.from_numpy(exact.copy()).permute(2, 0, 1).float()[None, :, None] / 127.5 - 1.0
    torch.testing.assert_close(vae.encode_reference(exact, 32, 48), vae.encode(frame))
    with pytest.raises(ValueError, match="multiple of 8"):
        vae.encode_reference(image, height=30, width=48)
    with pytest.raises(ValueError, match="uint8"):
        vae.encode_reference(image.astype(np.float32), height=32, width=48)


def test_normalize_and_denormalize_are_inverse():
    vae = tiny_wan_vae()
    mu = torch.randn(2, 16, 1, 3, 3)
    torch.testing.assert_close(vae.denormalize(vae.normalize(mu)), mu)
    # Channel 7 has mean 1.5508: a latent equal to the mean normalizes to zero.
    mean = torch.tensor(vae.config.latent_mean).view(1, -1, 1, 1, 1).expand(1, 16, 1, 1, 1)
    assert vae.normalize(mean).abs().max() < 1e-6


def test_encoder_rejects_frame_counts_it_cannot_stream():
    with pytest.raises(ValueError, match="1\\+4k"):
        tiny_wan_vae().encode(torch.zeros(1, 3, 4, 16, 16))


def test_models_check_flags_a_vae_of_another_size(tmp_path):
    from comfyui_persona.video.decoders.wan_vae import check_wan_vae_file

    torch.save(tiny_wan_vae().state_dict(), tmp_path / "Wan2.1_VAE.pth")
    (problem,) = check_wan_vae_file(tmp_path / "Wan2.1_VAE.pth", "wan2.1-vae")  # the released size
    assert "wrong shape" in problem and "decoder.conv1.weight" in problem
