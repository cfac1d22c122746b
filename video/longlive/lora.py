"""Merging LongLive's released LoRA into the generator: W += (alpha / r) * B @ A, strictly.

`lora.pt` holds PEFT's state dict (`{"generator_lora": sd, ...}` or a bare `sd`) with keys
`base_model.model.<module>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r]
(tests/fixtures/checkpoints/longlive_lora.json). PEFT's own loader ignores keys it does
not expect; this one refuses any missing, unexpected or mis-shaped key, because a LoRA
that silently half-applies produces plausible but wrong video.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..decoders.checkpoint import CheckpointLayoutError

PEFT_PREFIX = "base_model.model."
#: Linear layers LongLive's LoRA targets inside every block.
TARGET_SUFFIXES = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "ffn.0", "ffn.2",
)
RANK, ALPHA = 256, 256


class LoraLayoutError(CheckpointLayoutError):
    """A LoRA file whose keys or shapes do not fit the model."""


def lora_targets(model: nn.Module) -> list[str]:
    """Module paths the LoRA must cover: every targeted Linear in every block."""
    return [f"blocks.{i}.{s}" for i in range(len(model.blocks)) for s in TARGET_SUFFIXES]


def read_lora_state(path: Path) -> dict[str, torch.Tensor]:
    raw = torch.load(Path(path), map_location="cpu", mmap=True, weights_only=True)
    if isinstance(raw.get("generator_lora"), dict):
        raw = raw["generator_lora"]
    return raw


def pair_lora_keys(state: dict[str, torch.Tensor], targets: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A, B)}; raises `LoraLayoutError` naming every key that does not fit."""
    expected = {f"{PEFT_PREFIX}{m}.lora_{ab}.weight" for m in targets for ab in "AB"}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise LoraLayoutError(
            f"LoRA keys do not match the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    return {m: (state[f"{PEFT_PREFIX}{m}.lora_A.weight"], state[f"{PEFT_PREFIX}{m}.lora_B.weight"]) for m in targets}


@torch.no_grad()
def merge_lora(model: nn.Module, state: dict[str, torch.Tensor], *, alpha: float = ALPHA, rank: int = RANK) -> int:
    """Add `alpha / rank * B @ A` to each targeted weight in place; returns modules merged.

    The product is formed in float32 on the weight's device, then cast to the weight's dtype.
    Every shape is checked before any weight changes, so a bad file leaves the model intact.
    """
    pairs = pair_lora_keys(state, lora_targets(model))
    modules = dict(model.named_modules())
    bad = _shape_misfits(pairs, modules, rank)
    if bad:
        raise LoraLayoutError(f"{len(bad)} LoRA shapes do not fit (rank {rank}): {bad[:3]}")
    scale = alpha / rank
    for name, (a, b) in pairs.items():
        w = modules[name].weight
        delta = b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)
        w.copy_((w.float() + scale * delta).to(w.dtype))
    return len(pairs)


def _shape_misfits(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], modules: dict[str, nn.Module], rank: int) -> list[str]:
    """Each (A, B) pair whose shapes are not [rank, in] / [out, rank] of its module's weight."""
    bad = []
    for name, (a, b) in pairs.items():
        w = modules[name].weight
        if a.shape != (rank, w.shape[1]) or b.shape != (w.shape[0], rank):
            bad.append(f"{name}: A {tuple(a.shape)}, B {tuple(b.shape)} for weight {tuple(w.shape)}")
    return bad


def lora_problems(state: dict[str, torch.Tensor], preset: str) -> list[str]:
    """What keeps `state` from merging into the model of `preset` (empty: it fits)."""
    from .config import WanConfig
    from .model import build_on_meta

    model = build_on_meta(WanConfig.from_name(preset))
    try:
        pairs = pair_lora_keys(state, lora_targets(model))
    except LoraLayoutError as exc:
        return [str(exc)]
    bad = _shape_misfits(pairs, dict(model.named_modules()), RANK)
    return [f"{len(bad)} LoRA pairs with other shapes (e.g. {bad[:3]})"] if bad else []


def check_lora_file(path: Path, preset: str = "auto") -> list[str]:
    """Layout check for `persona models check`: keys and shapes against a preset's model.

    "auto": the file passes if it fits any known preset (it is checked against the
    generator it will merge into again at load time, strictly).
    """
    from .config import PRESETS

    state = read_lora_state(path)
    if preset != "auto":
        return lora_problems(state, preset)
    found = {name: lora_problems(state, name) for name in PRESETS}
    if any(not problems for problems in found.values()):
        return []
    return [f"fits no known preset; against {name}: {problems[0]}" for name, problems in sorted(found.items())]
