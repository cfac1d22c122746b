"""Config detection from checkpoint shapes, and the tiny model set written in the real formats.

`write_tiny_models` writes every file the engine loads; the engine then loads them through
the normal models-directory path (PERSONA_MODELS_DIR), each loader reading its sizes from
the file. Real sizes are checked on meta tensors: detection gives the released configs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfyui_persona.headless.cli import main
from comfyui_persona.persona.schema import ActionDirective
from comfyui_persona.video.backend import SessionSpec
from comfyui_persona.video.decoders.checkpoint import CheckpointLayoutError, read_shapes
from comfyui_persona.video.decoders.taehv import TAEHV, TAEHVConfig, detect_taehv_config
from comfyui_persona.video.decoders.wan_vae import WanVAE, WanVAEConfig, detect_wan_vae_config
from comfyui_persona.video.longlive import checkpoint as generator_checkpoint
from comfyui_persona.video.longlive.checkpoint import add_wrapper_prefix, detect_preset, read_generator_state
from comfyui_persona.video.longlive.config import PRESETS, WanConfig
from comfyui_persona.video.longlive.engine import LongLiveBackend
from comfyui_persona.video.longlive.model import CausalWanModel, build_on_meta
from comfyui_persona.video.longlive.settings import LongLiveSettings
from comfyui_persona.video.longlive.testing import TINY_PRESET, write_tiny_models
from comfyui_persona.video.model_files import ENV_VAR
from comfyui_persona.video.text.umt5 import UMT5Config, _meta_model, detect_umt5_config, hf_to_wan_umt5

SPEC = SessionSpec(persona_id="p1", persona_name="Ada", look={"description": "a woman with red hair"},
                   width=96, height=64, seed=7)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(directory)
    return directory


def test_tiny_set_loads_through_the_models_dir_and_streams_frames(tiny_dir, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tiny_dir))
    engine = LongLiveBackend(settings=LongLiveSettings(dtype="float32"), blend_chunks=1)
    assert engine.model.cfg == WanConfig.from_name(TINY_PRESET)
    assert engine.text_encoder.text_len == engine.model.cfg.text_len == 32
    assert engine.decoder.config == TAEHVConfig.from_name("tiny")
    engine.start_session(SPEC)
    first = engine.next_chunk()
    rest = engine._prompt
    engine.submit([ActionDirective(action="wave", expression="smile", intensity=0.8, duration_s=2.0)], seq=1)
    assert engine._prompt != rest and "wav" in engine._prompt
    second = engine.next_chunk()
    assert first.frames.shape == (9, 64, 96, 3) and second.frames.shape == (12, 64, 96, 3)
    assert first.frames.dtype == np.uint8 and second.frames.dtype == np.uint8
    assert second.shows_directives == [1] and second.frames.std() > 0


def test_tiny_set_with_the_full_vae_decoder(tiny_dir):
    engine = LongLiveBackend(settings=LongLiveSettings(dtype="float32", decoder="vae"), models_dir=tiny_dir)
    assert isinstance(engine.decoder, WanVAE) and engine.decoder.config.dim == 8
    engine.start_session(SPEC)
    assert engine.next_chunk().frames.shape == (9, 64, 96, 3)


def test_models_check_reports_every_tiny_file_ok(tiny_dir, capsys):
    from comfyui_persona.video.lipsync.testing import write_tiny_lipsync_models

    write_tiny_lipsync_models(tiny_dir)  # the lip-sync files are registered too (docs/lipsync.md)
    assert main(["models", "check", "--dir", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("layout ok") == 9 and "9 of 9 files ready (1 alternative not needed)" in out
    assert "--       musetalk/taesd/diffusion_pytorch_model.safetensors  (not needed: musetalk/sd-vae/" in out


def test_each_loader_reads_its_sizes_from_the_tiny_files(tiny_dir):
    name, cfg = detect_preset(read_generator_state(tiny_dir / "longlive" / "longlive_base.pt"))
    assert name == TINY_PRESET and cfg.num_heads == 2  # heads come from the matched preset
    umt5 = detect_umt5_config(read_shapes(tiny_dir / "models_t5_umt5-xxl-enc-bf16.pth"))
    assert umt5 == UMT5Config.from_name("tiny")
    assert detect_taehv_config(read_shapes(tiny_dir / "taew2_1.pth")) == TAEHVConfig.from_name("tiny")
    assert detect_wan_vae_config(read_shapes(tiny_dir / "Wan2.1_VAE.pth")) == WanVAEConfig.from_name("tiny")


def test_real_sizes_are_detected_as_the_released_configs():
    """Shapes only (meta tensors): the released files' layouts map to the same configs as before."""
    name, cfg = detect_preset(build_on_meta(WanConfig.from_name("wan2.1-t2v-1.3b")).state_dict())
    assert name == "wan2.1-t2v-1.3b" and cfg == WanConfig()
    wan_layout = hf_to_wan_umt5(_meta_model(UMT5Config()).state_dict())
    assert detect_umt5_config(wan_layout) == UMT5Config()
    with torch.device("meta"):
        taehv, vae = TAEHV(TAEHVConfig()), WanVAE(WanVAEConfig())
    assert detect_taehv_config(taehv.state_dict()) == TAEHVConfig()
    assert detect_wan_vae_config(vae.state_dict()) == WanVAEConfig()


def test_every_preset_has_its_own_layout_and_settings_offer_them_all():
    layouts = [sorted((k, tuple(v.shape)) for k, v in build_on_meta(WanConfig.from_name(n)).state_dict().items())
               for n in PRESETS]
    assert len({tuple(layout) for layout in layouts}) == len(PRESETS)
    offered = LongLiveSettings.model_json_schema()["properties"]["preset"]["enum"]
    assert offered == ["auto", *PRESETS]


def test_a_generator_matching_no_preset_is_named_with_the_known_ones(tmp_path):
    odd = CausalWanModel(WanConfig.from_name("tiny").replace(dim=48, num_heads=3, ffn_dim=96))
    path = tmp_path / "longlive" / "longlive_base.pt"
    path.parent.mkdir()
    torch.save({"generator": add_wrapper_prefix(odd.state_dict())}, path)
    with pytest.raises(CheckpointLayoutError, match=r"dim 48, 2 layers, ffn 96.*matches no known Wan preset"
                       r".*tiny \(dim 32.*tiny-engine.*wan2.1-t2v-1.3b \(dim 1536, 30 layers"):
        generator_checkpoint.load_generator(path)
    (problem,) = generator_checkpoint.check_generator_file(path)
    assert "matches no known Wan preset" in problem


def test_a_checkpoint_that_is_not_a_state_dict_is_named_as_such(tmp_path):
    path = tmp_path / "longlive_base.pt"
    torch.save([torch.zeros(2)], path)  # a list: someone saved the wrong object
    with pytest.raises(CheckpointLayoutError, match=r"longlive_base.pt holds a list, not a generator state dict"):
        read_generator_state(path)


def test_a_named_preset_must_match_the_file(tiny_dir):
    with pytest.raises(CheckpointLayoutError, match="does not match the wan2.1-t2v-1.3b preset"):
        LongLiveBackend(settings=LongLiveSettings(preset="wan2.1-t2v-1.3b", dtype="float32"), models_dir=tiny_dir)


def test_fp8_linear_precision_quantises_the_loaded_blocks_and_still_streams(tiny_dir, monkeypatch):
    from comfyui_persona.video.longlive.fp8 import FP8_BLOCK_LINEARS, Fp8Linear

    monkeypatch.setenv(ENV_VAR, str(tiny_dir))
    engine = LongLiveBackend(settings=LongLiveSettings(dtype="float32", linear_precision="fp8"), blend_chunks=1)
    quantised = [m for m in engine.model.modules() if isinstance(m, Fp8Linear)]
    # q, k and v were fused into one layer at load (CausalWanModel.fuse_qkv): 8 - 2 per block.
    assert len(quantised) == (len(FP8_BLOCK_LINEARS) - 2) * engine.model.cfg.num_layers
    assert all(isinstance(b.self_attn.qkv, Fp8Linear) for b in engine.model.blocks)
    engine.start_session(SPEC)
    chunk = engine.next_chunk()
    assert chunk.frames.dtype == np.uint8 and chunk.frames.shape[1:] == (64, 96, 3)


def test_settings_denoising_steps_set_the_engines_steps_unless_given(tiny_dir):
    engine = LongLiveBackend(settings=LongLiveSettings(dtype="float32", denoising_steps=2), models_dir=tiny_dir)
    engine.start_session(SPEC)
    assert len(engine.stream.timesteps) == 2
    engine = LongLiveBackend(engine.runtime, engine.text_encoder, engine.decoder,
                             settings=LongLiveSettings(denoising_steps=2), steps=3)
    engine.start_session(SPEC)
    assert len(engine.stream.timesteps) == 3
    plain = LongLiveBackend(engine.runtime, engine.text_encoder, engine.decoder)
    plain.start_session(SPEC)
    assert len(plain.stream.timesteps) == 4
