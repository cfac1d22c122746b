"""Loading the released LongLive generator into our model: file → state dict → strict load.

`longlive_base.pt` is a pickle of {"generator": {"model.<key>": tensor, ...}, ...}
(tests/fixtures/checkpoints/README.md). The one layout change, the `model.` prefix of the
training wrapper, lives in `strip_wrapper_prefix`; nothing else renames keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import WanConfig
from .model import CausalWanModel, build_on_meta

WRAPPER_PREFIX = "model."
#: Top-level keys of the training checkpoint that may hold the generator, in the reference's order.
GENERATOR_KEYS = ("generator", "model")


class CheckpointLayoutError(ValueError):
    """A checkpoint whose keys or shapes are not the LongLive generator's."""


def strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`model.blocks.0.ffn.0.weight` → `blocks.0.ffn.0.weight`; every key must carry the prefix.

    Keys without it (a bare Wan-AI `diffusion_pytorch_model` layout) pass through only if
    none has it: a mix means a wrong file.
    """
    with_prefix = [k for k in state if k.startswith(WRAPPER_PREFIX)]
    if not with_prefix:
        return dict(state)
    if len(with_prefix) != len(state):
        odd = sorted(k for k in state if not k.startswith(WRAPPER_PREFIX))[:5]
        raise CheckpointLayoutError(f"some keys lack the {WRAPPER_PREFIX!r} prefix, e.g. {odd}")
    return {k[len(WRAPPER_PREFIX):]: v for k, v in state.items()}


def add_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `strip_wrapper_prefix` (to write files in the released layout)."""
    return {WRAPPER_PREFIX + k: v for k, v in state.items()}


def read_generator_state(path: Path) -> dict[str, torch.Tensor]:
    """The generator's state dict from a `.pt` training checkpoint or a `.safetensors` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    for key in GENERATOR_KEYS:
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointLayoutError(f"{path} holds no generator state dict (top-level keys: {sorted(raw)[:8]})")
    return strip_wrapper_prefix(raw)


def layout_problems(state: dict[str, torch.Tensor], cfg: WanConfig) -> list[str]:
    """What keeps `state` from loading strictly into the model for `cfg` (empty: it fits)."""
    expected = build_on_meta(cfg).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if wrong:
        problems.append(f"{len(wrong)} keys with other shapes (e.g. {wrong[:3]})")
    return problems


def check_generator_file(path: Path, preset: str = "wan2.1-t2v-1.3b") -> list[str]:
    """Layout check for `persona models check` (mmap: reads shapes, not weights)."""
    try:
        state = read_generator_state(path)
    except CheckpointLayoutError as exc:
        return [str(exc)]
    return layout_problems(state, WanConfig.from_name(preset))


def load_generator(path: Path, cfg: WanConfig, device: str | torch.device = "cpu") -> CausalWanModel:
    """Build on meta, assign the file's tensors (strict), and move to `device`."""
    state = read_generator_state(path)
    problems = layout_problems(state, cfg)
    if problems:
        raise CheckpointLayoutError(
            f"{path} does not match the {cfg.num_layers}-layer dim-{cfg.dim} generator: " + "; ".join(problems)
        )
    model = build_on_meta(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device)
