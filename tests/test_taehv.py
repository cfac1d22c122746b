"""TAEW2.1 tiny decoder: released layout, strict loading, streaming decode, uint8 frames."""

from __future__ import annotations

import json

import pytest
import torch

from comfyui_persona.video.decoders.checkpoint import CheckpointLayoutError
from comfyui_persona.video.decoders.streaming import StreamingDecoder, frames_for, open_stream
from comfyui_persona.video.decoders.taehv import (
    TAEHV,
    TAEHVConfig,
    adapt_taehv_state_dict,
    load_taehv,
    tiny_taehv,
)
from paths import CHECKPOINT_MANIFESTS

MANIFEST = json.loads((CHECKPOINT_MANIFESTS / "taew2_1.json").read_text())


def _perturbed_tiny(seed: int = 0) -> TAEHV:
    model = tiny_taehv(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def test_meta_built_taehv_matches_released_checkpoint_layout():
    with torch.device("meta"):
        model = TAEHV(TAEHVConfig.from_name("taew2.1"))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    released = {k: v["shape"] for k, v in MANIFEST["tensors"].items()}
    assert ours == released
    assert sum(p.numel() for p in model.parameters()) == MANIFEST["total_params"]
    cfg = model.config
    assert (
        cfg.t_upscale == MANIFEST["config"]["t_upscale"]
        and cfg.t_downscale == MANIFEST["config"]["t_downscale"]
    )


def test_tgrow_stored_with_a_time_upscale_keeps_the_last_rows(tmp_path):
    """The real file may store decoder.7 as [512, 256, 1, 1] (see the manifest's notes)."""
    model = _perturbed_tiny()
    sd = model.state_dict()
    rows = sd["decoder.7.conv.weight"].shape[0]
    wide = torch.cat([torch.full_like(sd["decoder.7.conv.weight"], 9.0), sd["decoder.7.conv.weight"]])
    adapted = adapt_taehv_state_dict({**sd, "decoder.7.conv.weight": wide}, model)
    assert torch.equal(adapted["decoder.7.conv.weight"], sd["decoder.7.conv.weight"])
    assert adapted["decoder.7.conv.weight"].shape[0] == rows
    torch.save({**sd, "decoder.7.conv.weight": wide}, tmp_path / "taew2_1.pth")
    loaded = load_taehv(tmp_path / "taew2_1.pth", dtype=torch.float32, config="tiny")
    z = torch.randn(1, 16, 2, 3, 3)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)


def test_load_names_wrong_keys(tmp_path):
    sd = tiny_taehv().state_dict()
    del sd["decoder.22.bias"]
    torch.save(sd, tmp_path / "taew2_1.pth")
    with pytest.raises(CheckpointLayoutError, match="decoder.22.bias"):
        load_taehv(tmp_path / "taew2_1.pth", config="tiny")


def test_chunked_decode_equals_one_shot_decode():
    model = _perturbed_tiny()
    z = torch.randn(1, 16, 7, 3, 4, generator=torch.Generator().manual_seed(0))
    whole = model.decode(z)
    assert whole.shape == (1, 3, 4 * 7 - 3, 24, 32)
    for sizes in ([3, 3, 1], [1] * 7):
        stream = model.decode_stream()
        parts, start = [], 0
        for n in sizes:
            parts.append(stream.decode(z[:, :, start : start + n]))
            start += n
        torch.testing.assert_close(torch.cat(parts, dim=2), whole, rtol=0, atol=1e-5)


def test_frame_by_frame_reference_equals_time_parallel_decode():
    """An independent per-frame loop (MemBlock past = its previous input) gives the same video."""
    from comfyui_persona.video.decoders.taehv import MemBlock, TGrow

    model = _perturbed_tiny(seed=4)
    z = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    memory: dict[int, torch.Tensor] = {}

    def run(i: int, x: torch.Tensor) -> list[torch.Tensor]:
        if i == len(model.decoder):
            return [x]
        layer = model.decoder[i]
        if isinstance(layer, MemBlock):
            past = memory.get(i, torch.zeros_like(x))
            memory[i] = x
            return run(i + 1, layer(x, past))
        if isinstance(layer, TGrow):
            y = layer.conv(x)
            return [f for part in y.chunk(layer.stride, dim=1) for f in run(i + 1, part)]
        return run(i + 1, layer(x))

    with torch.no_grad():
        frames = [f for t in range(z.shape[2]) for f in run(0, z[:, :, t])]
    expected = torch.stack(frames[3:], dim=2).clamp(0, 1)
    torch.testing.assert_close(model.decode(z), expected, rtol=0, atol=1e-5)


def test_stream_gives_uint8_frames_9_then_12():
    stream = open_stream(tiny_taehv())
    assert isinstance(stream, StreamingDecoder)
    z = torch.randn(1, 16, 6, 2, 3)
    first, second = stream.decode_uint8(z[:, :, :3]), stream.decode_uint8(z[:, :, 3:])
    assert first.shape == (1, frames_for(3, True), 16, 24, 3) == (1, 9, 16, 24, 3)
    assert second.shape[1] == frames_for(3, False) == 12
    assert first.dtype == torch.uint8


def test_uint8_frames_are_the_float_decode_rounded_and_compiling_keeps_them():
    """decode_uint8 (the engine's path, compiled on a GPU) = decode() * 255 rounded, chunk by
    chunk with the stream's memory threaded through the compiled function."""
    model = _perturbed_tiny()
    z = torch.randn(1, 16, 9, 2, 3, generator=torch.Generator().manual_seed(4))
    chunks = [z[:, :, i : i + 3] for i in range(0, 9, 3)]
    plain = model.decode_stream()
    expected = [(plain.decode(c).float() * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1) for c in chunks]
    uint8 = model.decode_stream()
    assert all(torch.equal(uint8.decode_uint8(c), e) for c, e in zip(chunks, expected, strict=True))
    model.compile(backend="eager")
    compiled = model.decode_stream()
    assert all(torch.equal(compiled.decode_uint8(c), e) for c, e in zip(chunks, expected, strict=True))


def test_encoder_runs_on_released_structure():
    model = tiny_taehv()
    latents = model.encode(torch.rand(1, 3, 8, 16, 24))
    assert latents.shape == (1, 16, 2, 2, 3)
    with pytest.raises(ValueError, match="multiple of 4"):
        model.encode(torch.rand(1, 3, 6, 16, 24))


def test_models_check_accepts_the_real_layout_and_flags_another(tmp_path):
    from comfyui_persona.video.decoders.taehv import build_taehv, check_taehv_file

    torch.save(build_taehv("cpu", torch.float16).state_dict(), tmp_path / "taew2_1.pth")
    assert check_taehv_file(tmp_path / "taew2_1.pth") == []
    torch.save(tiny_taehv().state_dict(), tmp_path / "small.pth")
    (problem,) = check_taehv_file(tmp_path / "small.pth", "taew2.1")  # against the released widths
    assert "wrong shape" in problem and "decoder.1.weight" in problem
