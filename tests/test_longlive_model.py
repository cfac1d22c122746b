"""The causal Wan DiT: checkpoint layout, strict loading, parity with diffusers and with itself."""

import json

import pytest
import torch

from comfyui_persona.video.longlive.checkpoint import (
    CheckpointLayoutError,
    add_wrapper_prefix,
    load_generator,
    strip_wrapper_prefix,
)
from comfyui_persona.video.longlive.config import UnknownPresetError, WanConfig
from comfyui_persona.video.longlive.model import (
    KEEP_FP32_MODULES,
    CausalWanModel,
    build_on_meta,
    cast_for_inference,
    init_random_,
)
from comfyui_persona.video.longlive.scheduler import denoising_timesteps
from paths import CHECKPOINT_MANIFESTS

MANIFEST = CHECKPOINT_MANIFESTS / "longlive_generator_wan2.1_t2v_1.3b.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def tiny_model(seed: int = 0, **changes) -> CausalWanModel:
    cfg = WanConfig.from_name("tiny").replace(**changes)
    torch.manual_seed(seed)
    return init_random_(CausalWanModel(cfg), seed=seed, std=0.2).eval()


def test_meta_model_matches_released_checkpoint_layout_exactly():
    manifest = json.loads(MANIFEST.read_text())
    expected = {k: tuple(v["shape"]) for k, v in strip_wrapper_prefix(manifest["tensors"]).items()}
    model = build_on_meta(WanConfig.from_name("wan2.1-t2v-1.3b"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) ^ set(expected)) == []
    assert {k: s for k, s in ours.items() if expected[k] != s} == {}
    assert sum(p.numel() for p in model.parameters()) == manifest["total_params"] == 1_418_996_800


def test_preset_config_matches_manifest_config():
    config = json.loads(MANIFEST.read_text())["config"]
    cfg = WanConfig.from_name("wan2.1-t2v-1.3b")
    for key in ("dim", "ffn_dim", "freq_dim", "text_dim", "text_len", "num_heads", "num_layers",
                "local_attn_size", "sink_size", "qk_norm", "cross_attn_norm", "eps", "in_dim", "out_dim"):
        assert getattr(cfg, key) == config[key], key
    assert list(cfg.patch_size) == config["patch_size"]
    assert list(cfg.denoising_step_list) == config["inference_yaml"]["denoising_step_list"]
    assert cfg.timestep_shift == config["wrapper_kwargs"]["timestep_shift"]


def test_unknown_preset_error_lists_known_presets():
    with pytest.raises(UnknownPresetError, match="tiny.*wan2.1-t2v-1.3b"):
        WanConfig.from_name("wan2.1-t2v-1.3B")


def test_wrapper_prefix_converter_round_trips_and_rejects_mixed_keys():
    state = {"blocks.0.modulation": torch.zeros(1), "head.head.bias": torch.zeros(2)}
    wrapped = add_wrapper_prefix(state)
    assert sorted(wrapped) == ["model.blocks.0.modulation", "model.head.head.bias"]
    assert strip_wrapper_prefix(wrapped).keys() == state.keys()
    assert strip_wrapper_prefix(state).keys() == state.keys()  # bare Wan-AI layout passes
    with pytest.raises(CheckpointLayoutError, match="lack the 'model.' prefix"):
        strip_wrapper_prefix({**wrapped, "stray": torch.zeros(1)})


def test_save_then_strict_load_round_trips_in_the_released_format(tmp_path):
    model = tiny_model()
    path = tmp_path / "longlive_base.pt"
    torch.save({"generator": add_wrapper_prefix(model.state_dict()), "step": 3}, path)
    loaded = load_generator(path, model.cfg)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_strict_load_names_missing_and_unexpected_keys(tmp_path):
    state = add_wrapper_prefix(tiny_model().state_dict())
    state.pop("model.blocks.1.ffn.2.bias")
    state["model.blocks.1.ffn.3.bias"] = torch.zeros(32)
    path = tmp_path / "broken.pt"
    torch.save({"generator": state}, path)
    with pytest.raises(CheckpointLayoutError, match=r"1 missing keys .*ffn\.2\.bias.*1 unexpected keys.*ffn\.3\.bias"):
        load_generator(path, WanConfig.from_name("tiny"))


def test_precision_policy_keeps_listed_modules_in_float32():
    model = cast_for_inference(tiny_model(), torch.bfloat16)
    for name, p in model.named_parameters():
        kept = any(part in name for part in KEEP_FP32_MODULES)
        assert p.dtype == (torch.float32 if kept else torch.bfloat16), name
    assert "modulation" in KEEP_FP32_MODULES and "time_projection" in KEEP_FP32_MODULES


def test_released_model_runs_at_warped_timesteps():
    ts = denoising_timesteps(WanConfig.from_name("wan2.1-t2v-1.3b"))
    assert ts == pytest.approx([1000.0, 937.5, 833.3333, 625.0], abs=1e-3)


@torch.no_grad()
def test_the_residual_stream_is_row_major_through_the_blocks():
    """Each token's features contiguous from the patch embedding on, and kept so by a block
    (norms read a token's row; a transposed layout made every row strided on the GPU)."""
    cfg = WanConfig.from_name("tiny")
    torch.manual_seed(0)
    model = init_random_(CausalWanModel(cfg)).eval()
    tokens = model.patchify(torch.randn(1, cfg.in_dim, 3, 8, 8))
    assert tokens.dtype == torch.float32 and tokens.is_contiguous()
    t = torch.full((1, 3), 500.0)
    _, e0 = model.embed_time(t)
    cos = sin = torch.zeros(tokens.shape[1], cfg.head_dim // 2)
    text = model.embed_text(torch.randn(1, 5, cfg.text_dim))
    out = model.blocks[0].forward_full(tokens, e0, *model.blocks[0].cross_attn.text_kv(text), cos, sin, None)
    assert out.is_contiguous()


def _diffusers_twin(model: CausalWanModel):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    cfg = model.cfg
    twin = WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=cfg.eps,
    )
    converted = convert_wan_transformer_to_diffusers(dict(model.state_dict()))
    twin.load_state_dict(converted, strict=True)
    return twin.eval()


@torch.no_grad()
def test_full_forward_equals_diffusers_wan_transformer():
    model = tiny_model()
    twin = _diffusers_twin(model)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 6, 8, 12, generator=gen)
    text = torch.randn(1, 5, model.cfg.text_dim, generator=gen)
    padded = torch.cat([text, torch.zeros(1, model.cfg.text_len - 5, model.cfg.text_dim)], dim=1)
    t = torch.tensor([833.3333])
    ours = model.forward_full(x, t, text)
    theirs = twin(hidden_states=x, timestep=t, encoder_hidden_states=padded, return_dict=False)[0]
    assert ours.shape == theirs.shape == x.shape
    assert ours.abs().mean() > 0.05  # a real signal, not two near-zero outputs agreeing
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=2e-5)
