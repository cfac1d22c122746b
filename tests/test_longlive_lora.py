"""LongLive's LoRA: its released layout, a strict merge, and W += B @ A exactly."""

import json

import pytest
import torch

from comfyui_persona.video.longlive.config import WanConfig
from comfyui_persona.video.longlive.lora import (
    PEFT_PREFIX,
    LoraLayoutError,
    lora_targets,
    merge_lora,
    read_lora_state,
)
from comfyui_persona.video.longlive.model import CausalWanModel, build_on_meta, init_random_
from paths import CHECKPOINT_MANIFESTS


def test_lora_targets_match_released_lora_manifest():
    manifest = json.loads((CHECKPOINT_MANIFESTS / "longlive_lora.json").read_text())
    model = build_on_meta(WanConfig.from_name("wan2.1-t2v-1.3b"))
    ours = {f"{PEFT_PREFIX}{m}.lora_{ab}.weight" for m in lora_targets(model) for ab in "AB"}
    assert ours == set(manifest["tensors"])
    modules = dict(model.named_modules())
    for key, info in manifest["tensors"].items():
        w = modules[key[len(PEFT_PREFIX):].rsplit(".lora_", 1)[0]].weight
        expected = [256, w.shape[1]] if ".lora_A." in key else [w.shape[0], 256]
        assert info["shape"] == expected, key


def _tiny_lora(model, rank: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    state = {}
    for m in lora_targets(model):
        out_f, in_f = modules[m].weight.shape
        state[f"{PEFT_PREFIX}{m}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen)
        state[f"{PEFT_PREFIX}{m}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen)
    return state


def test_merge_adds_b_times_a_to_every_target(tmp_path):
    model = init_random_(CausalWanModel(WanConfig.from_name("tiny")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _tiny_lora(model)
    path = tmp_path / "lora.pt"
    torch.save({"generator_lora": state, "critic_lora": {}, "step": 7}, path)
    assert merge_lora(model, read_lora_state(path), alpha=4, rank=4) == 20
    after = model.state_dict()
    a = state[f"{PEFT_PREFIX}blocks.1.ffn.2.lora_A.weight"]
    b = state[f"{PEFT_PREFIX}blocks.1.ffn.2.lora_B.weight"]
    torch.testing.assert_close(after["blocks.1.ffn.2.weight"], before["blocks.1.ffn.2.weight"] + b @ a)
    assert torch.equal(after["blocks.1.ffn.2.bias"], before["blocks.1.ffn.2.bias"])  # no LoRA bias
    assert torch.equal(after["blocks.0.modulation"], before["blocks.0.modulation"])


def test_merge_refuses_missing_or_unexpected_keys_and_leaves_weights_alone():
    model = init_random_(CausalWanModel(WanConfig.from_name("tiny")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _tiny_lora(model)
    state.pop(f"{PEFT_PREFIX}blocks.0.cross_attn.v.lora_B.weight")
    state[f"{PEFT_PREFIX}blocks.0.cross_attn.v.lora_B.default.weight"] = torch.zeros(32, 4)
    with pytest.raises(LoraLayoutError, match=r"1 missing .*cross_attn\.v\.lora_B.*1 unexpected"):
        merge_lora(model, state, alpha=4, rank=4)
    with pytest.raises(LoraLayoutError, match="shapes do not fit"):
        merge_lora(model, _tiny_lora(model, rank=4), alpha=8, rank=8)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_merge_scales_b_times_a_by_alpha_over_rank(tmp_path):
    """alpha != rank (LongLive's own file has alpha = rank = 256, where the scale is 1 and
    could not be told apart): W' = W + (alpha / rank) B @ A."""
    model = init_random_(CausalWanModel(WanConfig.from_name("tiny")))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = _tiny_lora(model, rank=4)
    merge_lora(model, state, alpha=1, rank=4)
    for m in ("blocks.0.self_attn.q", "blocks.1.cross_attn.o", "blocks.1.ffn.0"):
        a, b = state[f"{PEFT_PREFIX}{m}.lora_A.weight"], state[f"{PEFT_PREFIX}{m}.lora_B.weight"]
        torch.testing.assert_close(model.state_dict()[f"{m}.weight"], before[f"{m}.weight"] + 0.25 * (b @ a))


@torch.no_grad()
def test_merged_model_computes_what_a_peft_style_forward_computes():
    """The merged weights give the outputs of an unmerged LoRA forward, W x + (alpha/r) B (A x),
    written out here per linear, through a whole block-causal forward (alpha 2, rank 4)."""
    base = init_random_(CausalWanModel(WanConfig.from_name("tiny")), std=0.2).eval()
    state = _tiny_lora(base, rank=4, seed=3)
    for key in state:
        state[key] = state[key] * 0.1
    merged = init_random_(CausalWanModel(WanConfig.from_name("tiny")), std=0.2).eval()
    merge_lora(merged, state, alpha=2, rank=4)
    modules = dict(base.named_modules())
    for m in lora_targets(base):
        a, b, layer = state[f"{PEFT_PREFIX}{m}.lora_A.weight"], state[f"{PEFT_PREFIX}{m}.lora_B.weight"], modules[m]

        def peft_forward(x, layer=layer, a=a, b=b, weight=layer.weight, bias=layer.bias):
            return torch.nn.functional.linear(x, weight, bias) + 0.5 * (x @ a.T) @ b.T

        layer.forward = peft_forward
    gen = torch.Generator().manual_seed(2)
    x, text = torch.randn(1, 4, 3, 4, 6, generator=gen), torch.randn(1, 5, 24, generator=gen)
    t = torch.tensor([625.0])
    torch.testing.assert_close(merged.forward_full(x, t, text), base.forward_full(x, t, text), rtol=1e-4, atol=1e-4)
