"""Loading the released LongLive generator into our model: file → state dict → strict load.

`longlive_base.pt` is a pickle of {"generator": {"model.<key>": tensor, ...}, ...}
(tests/fixtures/checkpoints/README.md). The one layout change, the `model.` prefix of the
training wrapper, lives in `strip_wrapper_prefix`; nothing else renames keys.

Which architecture a file holds is read from its shapes (`detect_preset`): the file must
match one named `WanConfig` preset exactly, key for key and shape for shape. The head count
cannot be read from shapes (q/k/v are dim × dim whatever the split), so it comes from the
matched preset. `CheckpointLayoutError` is the one defined in `video/decoders/checkpoint.py`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..decoders.checkpoint import CheckpointLayoutError
from .config import PRESETS, WanConfig
from .model import CausalWanModel, build_on_meta

__all__ = [
    "CheckpointLayoutError",
    "add_wrapper_prefix",
    "check_generator_file",
    "describe_shapes",
    "detect_preset",
    "layout_problems",
    "load_generator",
    "read_generator_state",
    "resolve_config",
    "strip_wrapper_prefix",
]

WRAPPER_PREFIX = "model."
#: Top-level keys of the training checkpoint that may hold the generator, in the reference's order.
GENERATOR_KEYS = ("generator", "model")


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
    if not isinstance(raw, dict):
        raise CheckpointLayoutError(f"{path} holds a {type(raw).__name__}, not a generator state dict")
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


def describe_shapes(state: dict[str, torch.Tensor]) -> str:
    """What a generator state dict's shapes say (dim, layers, FFN, in/out, text dims), for errors."""
    try:
        patch = state["patch_embedding.weight"].shape
        layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        out = state["head.head.weight"].shape[0] // max(1, patch[2] * patch[3] * patch[4])
        return (
            f"dim {patch[0]}, {layers} layers, ffn {state['blocks.0.ffn.0.weight'].shape[0]}, "
            f"in {patch[1]}, out {out}, text_dim {state['text_embedding.0.weight'].shape[1]}, "
            f"freq_dim {state['time_embedding.0.weight'].shape[1]}, patch {tuple(patch[2:])}"
        )
    except (KeyError, IndexError):
        return "not a Wan DiT layout"


def _preset_text(name: str) -> str:
    cfg = WanConfig.from_name(name)
    return (
        f"{name} (dim {cfg.dim}, {cfg.num_layers} layers, ffn {cfg.ffn_dim}, in {cfg.in_dim}, "
        f"out {cfg.out_dim}, text_dim {cfg.text_dim})"
    )


def detect_preset(state: dict[str, torch.Tensor], what: str = "the generator") -> tuple[str, WanConfig]:
    """The named preset whose model has exactly `state`'s keys and shapes.

    Raises `CheckpointLayoutError` describing the file's shapes and listing every known
    preset when none matches. Building a preset on meta costs no memory, so trying each is
    cheap (well under a second for the real size).
    """
    matches = [name for name in PRESETS if not layout_problems(state, WanConfig.from_name(name))]
    if len(matches) == 1:
        return matches[0], WanConfig.from_name(matches[0])
    assert not matches, f"presets {matches} have the same layout; detection needs them to differ"
    raise CheckpointLayoutError(
        f"{what} ({describe_shapes(state)}) matches no known Wan preset; known presets: "
        + "; ".join(_preset_text(name) for name in sorted(PRESETS))
    )


def resolve_config(state: dict[str, torch.Tensor], preset: str = "auto", what: str = "the generator") -> WanConfig:
    """`preset` = "auto": the preset detected from the shapes; a name: that preset, checked strictly."""
    if preset == "auto":
        return detect_preset(state, what)[1]
    cfg = WanConfig.from_name(preset)
    problems = layout_problems(state, cfg)
    if problems:
        raise CheckpointLayoutError(
            f"{what} does not match the {preset} preset ({cfg.num_layers}-layer dim-{cfg.dim} generator): "
            + "; ".join(problems)
        )
    return cfg


def check_generator_file(path: Path, preset: str = "auto") -> list[str]:
    """Layout check for `persona models check` (mmap: reads shapes, not weights).

    With "auto" any known preset passes (the tiny set of `testing.write_tiny_models` too).
    """
    try:
        resolve_config(read_generator_state(path), preset, str(path))
    except CheckpointLayoutError as exc:
        return [str(exc)]
    return []


def load_generator(path: Path, cfg: WanConfig | str = "auto", device: str | torch.device = "cpu") -> CausalWanModel:
    """Build on meta, assign the file's tensors (strict), and move to `device`.

    `cfg`: a `WanConfig` (checked strictly against the file), a preset name, or "auto"
    (the preset detected from the file's shapes).
    """
    state = read_generator_state(path)
    if isinstance(cfg, str):
        cfg = resolve_config(state, cfg, str(path))
    problems = layout_problems(state, cfg)
    if problems:
        raise CheckpointLayoutError(
            f"{path} does not match the {cfg.num_layers}-layer dim-{cfg.dim} generator: " + "; ".join(problems)
        )
    model = build_on_meta(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device)
