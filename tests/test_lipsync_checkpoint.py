"""MuseTalk 1.5's released files: exact layouts, strict loading, and the libraries' own loaders as referees.

The manifests in tests/fixtures/lipsync/ list every key and shape of the three released
files (dumped from the public configs on the meta device; see their `notes`). The tiny
random set is written in the same formats and loaded through the same code path as the
real files. Where MuseTalk itself loads a file with a library (`AutoencoderKL.from_pretrained`,
`WhisperModel.from_pretrained`, `UNet2DConditionModel(**json)` + `load_state_dict`), that
library loader is run on the tiny files and must give the same numbers as ours.
"""

from __future__ import annotations

import json

import pytest
import torch

from comfyui_persona.errors import ModelFileMissingError, PersonaError
from comfyui_persona.headless.cli import main
from comfyui_persona.video import model_files
from comfyui_persona.video.decoders.checkpoint import CheckpointLayoutError, read_state_dict
from comfyui_persona.video.lipsync.checkpoint import (
    check_taesd_file,
    check_unet_file,
    config_for_files,
    convert_vae_state,
    find_lipsync_files,
    load_musetalk,
    released_layouts,
    whisper_encoder_state,
)
from comfyui_persona.video.lipsync.config import (
    PRESETS,
    MuseTalkConfig,
    UnknownLipSyncPresetError,
    preset_with,
)
from comfyui_persona.video.lipsync.model import audio_position_encoding, build_on_meta
from comfyui_persona.video.lipsync.testing import write_tiny_lipsync_models
from paths import FIXTURES

MANIFESTS = {name: json.loads((FIXTURES / "lipsync" / f"{name}.json").read_text())
             for name in ("musetalk_v15_unet", "sd_vae_ft_mse", "whisper_tiny", "taesd")}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-lipsync")
    write_tiny_lipsync_models(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_model(tiny_dir):
    return load_musetalk(models_dir=tiny_dir)


def _shapes(manifest: dict, section: str = "tensors") -> dict[str, list[int]]:
    return {k: v["shape"] for k, v in manifest[section].items()}


# ---- layouts -------------------------------------------------------------------------


def test_meta_built_model_matches_every_released_key_and_shape():
    cfg = MuseTalkConfig.from_name("musetalk-1.5")
    layouts = released_layouts(cfg)
    assert layouts["unet"] == _shapes(MANIFESTS["musetalk_v15_unet"])
    assert layouts["vae"] == _shapes(MANIFESTS["sd_vae_ft_mse"])
    assert layouts["whisper_encoder"] == _shapes(MANIFESTS["whisper_tiny"])
    assert layouts["whisper_skipped"] == _shapes(MANIFESTS["whisper_tiny"], "skipped_tensors")
    model = build_on_meta(cfg)
    assert sum(p.numel() for p in model.unet.parameters()) == MANIFESTS["musetalk_v15_unet"]["total_params"] == 849_947_844
    assert sum(p.numel() for p in model.vae.parameters()) == MANIFESTS["sd_vae_ft_mse"]["total_params"]
    assert sum(p.numel() for p in model.whisper.parameters()) == MANIFESTS["whisper_tiny"]["total_params"]
    assert MANIFESTS["musetalk_v15_unet"]["config"] == cfg.unet_kwargs()


def test_manifests_pin_the_facts_the_loader_depends_on():
    unet = _shapes(MANIFESTS["musetalk_v15_unet"])
    assert unet["conv_in.weight"] == [320, 8, 3, 3]  # 4 masked + 4 reference latent channels
    assert unet["conv_out.weight"] == [4, 320, 3, 3]
    assert unet["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == [320, 384]  # Whisper width
    vae = _shapes(MANIFESTS["sd_vae_ft_mse"])
    assert vae["decoder.mid_block.attentions.0.query.weight"] == [512, 512]  # the legacy names, as saved
    assert not any(".to_q." in k for k in vae)
    whisper = _shapes(MANIFESTS["whisper_tiny"])
    assert whisper["model.encoder.embed_positions.weight"] == [1500, 384]
    assert sum(k.startswith("model.encoder.layers.3.") for k in whisper) and not any(".layers.4." in k for k in whisper)


def test_tiny_preset_keeps_the_real_key_patterns():
    """Same block types and counts (not widths): every real key's pattern occurs in the tiny set."""
    import re

    def patterns(layout):
        return {re.sub(r"\.\d+\.", ".N.", k) for k in layout}

    real, tiny = released_layouts(PRESETS["musetalk-1.5"]), released_layouts(PRESETS["tiny"])
    for part in ("vae", "whisper_encoder", "unet"):
        missing = patterns(real[part]) - patterns(tiny[part])
        assert not missing, (part, sorted(missing)[:5])
    assert PRESETS["tiny"].latent_factor == PRESETS["musetalk-1.5"].latent_factor == 8


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UnknownLipSyncPresetError, match="musetalk-1.5"):
        MuseTalkConfig.from_name("musetalk-2")


# ---- the tiny set: exact round trip --------------------------------------------------


def test_tiny_files_are_in_the_released_formats(tiny_dir):
    unet = read_state_dict(tiny_dir / "musetalk" / "musetalkV15" / "unet.pth")
    vae = read_state_dict(tiny_dir / "musetalk" / "sd-vae" / "diffusion_pytorch_model.bin")
    whisper = read_state_dict(tiny_dir / "musetalk" / "whisper" / "pytorch_model.bin")
    assert "conv_in.weight" in unet and not any(k.startswith("unet.") for k in unet)
    assert "encoder.mid_block.attentions.0.query.weight" in vae and "encoder.mid_block.attentions.0.to_q.weight" not in vae
    assert any(k.startswith("model.decoder.") for k in whisper) and "proj_out.weight" in whisper
    assert json.loads((tiny_dir / "musetalk" / "musetalkV15" / "musetalk.json").read_text())["in_channels"] == 8


def test_loading_the_tiny_files_round_trips_every_tensor_exactly(tiny_dir, tiny_model):
    files = find_lipsync_files(tiny_dir)
    assert tiny_model.cfg == PRESETS["tiny"]  # sizes read from the config files beside the weights
    unet = read_state_dict(files.unet)
    vae = convert_vae_state(read_state_dict(files.vae))
    whisper = whisper_encoder_state(read_state_dict(files.whisper))
    for part, written in (("unet", unet), ("vae", vae), ("whisper", whisper)):
        loaded = getattr(tiny_model, part).state_dict()
        assert loaded.keys() == written.keys(), part
        for key, value in written.items():
            assert torch.equal(loaded[key], value), f"{part}.{key}"
    assert torch.equal(tiny_model.audio_pe, audio_position_encoding(*tiny_model.audio_pe.shape))


def test_models_check_reports_the_tiny_files_ok(tiny_dir, capsys):
    main(["models", "check", "--dir", str(tiny_dir)])  # the LongLive files are missing here: exit 1
    out = capsys.readouterr().out
    for name in ("unet.pth", "diffusion_pytorch_model.bin", "whisper/pytorch_model.bin"):
        line = next(line for line in out.splitlines() if name in line)
        assert line.strip().startswith("OK") and "layout ok" in line


def test_models_check_lists_missing_lipsync_files_with_their_source(tmp_path, capsys):
    assert main(["models", "check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "MISSING  musetalk/musetalkV15/unet.pth" in out and "huggingface.co/TMElyralab/MuseTalk" in out
    assert "MISSING  musetalk/sd-vae/diffusion_pytorch_model.bin" in out and "stabilityai/sd-vae-ft-mse" in out
    assert "MISSING  musetalk/whisper/pytorch_model.bin" in out and "openai/whisper-tiny" in out


def test_a_missing_file_raises_the_named_error(tmp_path):
    with pytest.raises(ModelFileMissingError) as err:
        find_lipsync_files(tmp_path)
    assert isinstance(err.value, PersonaError) and isinstance(err.value, FileNotFoundError)
    assert err.value.name == "musetalk/musetalkV15/unet.pth"
    assert err.value.size_bytes == 849_947_844 * 4 and "TMElyralab/MuseTalk" in err.value.source
    assert str(tmp_path / "musetalk" / "musetalkV15" / "unet.pth") in err.value.looked_in
    with pytest.raises(ModelFileMissingError, match="given explicitly"):
        find_lipsync_files(tmp_path, unet=tmp_path / "elsewhere.pth")


def test_a_file_of_another_layout_fails_loudly_naming_the_keys(tiny_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    unet_path = bad / "musetalk" / "musetalkV15" / "unet.pth"
    state = read_state_dict(tiny_dir / "musetalk" / "musetalkV15" / "unet.pth")  # not the copy: it is rewritten
    state["conv_in.weight"] = state["conv_in.weight"][:, :4].clone()  # a 4-channel (plain SD) UNet
    state.pop("conv_out.bias")
    torch.save(dict(state), unet_path)
    with pytest.raises(CheckpointLayoutError, match=r"1 missing: conv_out\.bias.*conv_in\.weight: file \[32, 4, 3, 3\]"):
        load_musetalk(models_dir=bad)
    problems = check_unet_file(unet_path)
    assert len(problems) == 1 and "conv_out.bias" in problems[0]
    main(["models", "check", "--dir", str(bad)])
    assert "BAD" in capsys.readouterr().out


def test_whisper_file_of_another_model_is_refused():
    with pytest.raises(CheckpointLayoutError, match="keys of no Whisper model: text_model"):
        whisper_encoder_state({"model.encoder.conv1.weight": torch.zeros(1), "text_model.embeddings": torch.zeros(1)})
    assert whisper_encoder_state({"encoder.conv1.weight": torch.ones(1), "decoder.x": torch.ones(1)}).keys() == {
        "conv1.weight"}  # a WhisperModel save loads too


def test_vae_converter_renames_only_the_legacy_attention():
    legacy = {"decoder.mid_block.attentions.0.proj_attn.bias": 1, "decoder.mid_block.attentions.0.group_norm.weight": 2,
              "encoder.mid_block.attentions.0.query.weight": 3, "encoder.down_blocks.0.resnets.0.conv1.weight": 4}
    assert convert_vae_state(legacy) == {
        "decoder.mid_block.attentions.0.to_out.0.bias": 1, "decoder.mid_block.attentions.0.group_norm.weight": 2,
        "encoder.mid_block.attentions.0.to_q.weight": 3, "encoder.down_blocks.0.resnets.0.conv1.weight": 4}
    current = {"decoder.mid_block.attentions.0.to_q.weight": 5}
    assert convert_vae_state(current) == current


def test_config_files_give_the_sizes_and_their_absence_the_public_preset(tiny_dir, tmp_path):
    import shutil

    assert config_for_files(find_lipsync_files(tiny_dir)).name == "tiny"
    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir, bare)
    for config in bare.rglob("*.json"):
        config.unlink()
    assert config_for_files(find_lipsync_files(bare)) == PRESETS["musetalk-1.5"]
    with pytest.raises(CheckpointLayoutError, match="wrong shape"):  # tiny weights read as the real sizes
        load_musetalk(models_dir=bare)


# ---- referees: the libraries' own loaders, MuseTalk's own steps ----------------------


def test_diffusers_own_loader_reads_the_legacy_vae_file_as_ours_does(tiny_dir, tiny_model):
    from diffusers import AutoencoderKL

    reference = AutoencoderKL.from_pretrained(tiny_dir / "musetalk" / "sd-vae").eval()
    ours = tiny_model.vae.state_dict()
    theirs = reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_transformers_whisper_model_gives_the_hidden_states_musetalk_stacks(tiny_dir, tiny_model):
    """MuseTalk: `WhisperModel.from_pretrained(dir).encoder(mel, output_hidden_states=True)`,
    `torch.stack(hidden_states, dim=2)`."""
    from transformers import WhisperModel

    reference = WhisperModel.from_pretrained(tiny_dir / "musetalk" / "whisper").eval()
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.stack(reference.encoder(mel, output_hidden_states=True).hidden_states, dim=2)
    got = tiny_model.audio_features(mel)
    assert got.shape == (1, 1500, PRESETS["tiny"].audio_layers, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_inpaint_equals_musetalks_inference_steps(tiny_dir, tiny_model):
    """The released inference, step by step from musetalk/models/{unet,vae}.py and
    scripts/inference.py, with the library models loaded the way MuseTalk loads them."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    folder = tiny_dir / "musetalk"
    unet = UNet2DConditionModel(**{k: v for k, v in json.loads((folder / "musetalkV15" / "musetalk.json").read_text())
                                   .items() if not k.startswith("_")})
    unet.load_state_dict(torch.load(folder / "musetalkV15" / "unet.pth", weights_only=True))
    vae = AutoencoderKL.from_pretrained(folder / "sd-vae")
    unet.eval(), vae.eval()
    gen = torch.Generator().manual_seed(2)
    crop = torch.rand(2, 3, 256, 256, generator=gen)  # RGB in 0..1
    whisper_chunks = torch.randn(2, 10 * 3, 16, generator=gen)  # (T, 10 positions x 3 layers, d)
    with torch.no_grad():
        half = torch.ones(256, 256)
        half[128:] = 0
        masked = (crop * half - 0.5) / 0.5  # preprocess_img(half_mask=True): mask, then Normalize(0.5, 0.5)
        whole = (crop - 0.5) / 0.5
        latents = torch.cat([vae.encode(masked).latent_dist.mode() * 0.18215,
                             vae.encode(whole).latent_dist.mode() * 0.18215], dim=1)
        table = torch.zeros(5000, 16)  # PositionalEncoding(d_model): sin on even, cos on odd channels
        position = torch.arange(0, 5000, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, 16, 2).float() * (-torch.log(torch.tensor(10000.0)) / 16))
        table[:, 0::2], table[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        audio = whisper_chunks + table[None, :30]
        predicted = unet(latents, torch.tensor([0]), encoder_hidden_states=audio).sample
        expected = vae.decode(predicted / 0.18215).sample.clamp(-1, 1)
        windows = whisper_chunks.reshape(2, 10, 3, 16)
        got = tiny_model.inpaint(whole, tiny_model.audio_tokens(windows))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_every_lipsync_file_is_registered_for_models_check():
    for key in ("musetalk.unet", "musetalk.vae", "musetalk.whisper", "musetalk.taesd"):
        spec = model_files.FILES[key]
        assert spec.checker and spec.checker.startswith(".lipsync.checkpoint:") and spec.filename.startswith("musetalk/")


def test_a_chunk_reference_is_the_per_frame_reference_when_the_frames_are_that_face(tiny_model):
    gen = torch.Generator().manual_seed(3)
    face = torch.rand(1, 3, 256, 256, generator=gen) * 2 - 1
    other = torch.rand(1, 3, 256, 256, generator=gen) * 2 - 1
    tokens = tiny_model.audio_tokens(torch.randn(2, 10, 3, 16, generator=gen))
    same = tiny_model.inpaint(face.expand(2, -1, -1, -1), tokens)
    # Two float32 paths through the VAE and UNet: they round apart by 1e-5 (seen on a loaded box)
    torch.testing.assert_close(tiny_model.inpaint(face.expand(2, -1, -1, -1), tokens, reference=face), same,
                               rtol=1e-4, atol=1e-4)
    assert not torch.allclose(tiny_model.inpaint(face.expand(2, -1, -1, -1), tokens, reference=other), same)


# ---- TAESD: the optional fast autoencoder ---------------------------------------------


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-lipsync-taesd")
    write_tiny_lipsync_models(directory, autoencoder="taesd")
    return directory


def test_taesd_preset_matches_the_released_layout_and_keeps_the_unet():
    cfg = MuseTalkConfig.from_name("musetalk-1.5-taesd")
    assert released_layouts(cfg)["vae"] == _shapes(MANIFESTS["taesd"])
    assert sum(p.numel() for p in build_on_meta(cfg).vae.parameters()) == MANIFESTS["taesd"]["total_params"]
    assert cfg.unet == PRESETS["musetalk-1.5"].unet and cfg.whisper == PRESETS["musetalk-1.5"].whisper
    assert cfg.vae_scaling == 1.0 and cfg.latent_factor == 8  # TAESD's latents are the UNet's (scaled) ones
    assert preset_with("tiny", "taesd") == "tiny-taesd" and preset_with("musetalk-1.5-taesd", "sd-vae") == "musetalk-1.5"
    with pytest.raises(UnknownLipSyncPresetError, match="sd-vae, taesd"):
        preset_with("musetalk-1.5", "consistency-decoder")


def test_tiny_taesd_files_round_trip_and_diffusers_reads_them_the_same(taesd_dir):
    from diffusers import AutoencoderTiny
    from safetensors.torch import load_file

    files = find_lipsync_files(taesd_dir, autoencoder="taesd")
    assert files.vae == taesd_dir / "musetalk" / "taesd" / "diffusion_pytorch_model.safetensors"
    model = load_musetalk(files)
    assert model.cfg == PRESETS["tiny-taesd"] and type(model.vae).__name__ == "AutoencoderTiny"
    written = load_file(files.vae)
    loaded = model.vae.state_dict()
    assert loaded.keys() == written.keys() and all(torch.equal(loaded[k], written[k]) for k in written)
    theirs = AutoencoderTiny.from_pretrained(files.vae.parent).state_dict()
    assert theirs.keys() == loaded.keys() and all(torch.equal(theirs[k], loaded[k]) for k in loaded)
    assert check_taesd_file(files.vae) == []


def test_taesd_inpaint_is_the_library_autoencoder_around_the_same_unet(taesd_dir):
    from diffusers import AutoencoderTiny

    model = load_musetalk(models_dir=taesd_dir, autoencoder="taesd")
    vae = AutoencoderTiny.from_pretrained(taesd_dir / "musetalk" / "taesd").eval()
    gen = torch.Generator().manual_seed(4)
    whole = torch.rand(2, 3, 256, 256, generator=gen) * 2 - 1
    tokens = model.audio_tokens(torch.randn(2, 10, 3, 16, generator=gen))
    with torch.no_grad():
        masked = whole.clone()
        masked[:, :, 128:] = -1.0
        latents = torch.cat([vae.encode(masked).latents, vae.encode(whole).latents], dim=1)
        expected = vae.decode(model.unet(latents, torch.tensor([0]), encoder_hidden_states=tokens).sample).sample
        got = model.inpaint(whole, tokens)
    torch.testing.assert_close(got, expected.clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_a_missing_taesd_file_is_named_and_an_sd_vae_file_in_its_place_is_refused(tiny_dir, taesd_dir, tmp_path):
    import shutil

    with pytest.raises(ModelFileMissingError) as err:
        find_lipsync_files(tiny_dir, autoencoder="taesd")  # the sd-vae set has no TAESD
    assert err.value.name == "musetalk/taesd/diffusion_pytorch_model.safetensors"
    assert "madebyollin/taesd" in err.value.source
    wrong = find_lipsync_files(tiny_dir).vae  # sd-vae's file given as the autoencoder file
    with pytest.raises(CheckpointLayoutError, match="missing: decoder.layers"):
        load_musetalk(find_lipsync_files(taesd_dir, vae=wrong, autoencoder="taesd"))
    assert check_taesd_file(wrong) and "missing" in check_taesd_file(wrong)[0]
    bare = tmp_path / "bare"
    shutil.copytree(taesd_dir, bare)
    (bare / "musetalk" / "taesd" / "config.json").unlink()
    assert config_for_files(find_lipsync_files(bare, autoencoder="taesd")).name.startswith("musetalk-1.5-taesd")


def test_models_check_takes_taesd_in_place_of_sd_vae(taesd_dir, capsys):
    main(["models", "check", "--dir", str(taesd_dir)])  # the LongLive files are missing here
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("OK") and "/taesd/" in line)
    assert "layout ok" in line
    assert "--       musetalk/sd-vae/diffusion_pytorch_model.bin  (not needed: musetalk/taesd/" in out
    assert "MISSING  musetalk/sd-vae" not in out
