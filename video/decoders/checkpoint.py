"""Reading checkpoint files strictly, and building real-size models cheaply.

Shared by the decoders and the text encoder. A checkpoint that does not match our module
must fail loudly with the keys that differ: `load_state_dict(strict=True)` alone reports a
shape mismatch only after building the whole model, and a silent partial load (what PEFT
and `strict=False` do) would render garbage without an error.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "CheckpointLayoutError",
    "check_layout",
    "init_random_",
    "layout_problems",
    "materialize",
    "read_shapes",
    "read_state_dict",
]


class CheckpointLayoutError(ValueError):
    """A checkpoint's keys or shapes differ from the module it is loaded into."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a bare state dict from `.safetensors` or a torch pickle, memory-mapped, tensors only.

    A `.pth` wrapped as {"state_dict": ...} or {"model": ...} is unwrapped, since people
    re-save checkpoints that way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    if isinstance(sd, dict) and len(sd) == 1 and next(iter(sd)) in ("state_dict", "model"):
        sd = next(iter(sd.values()))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointLayoutError(f"{path}: expected a bare state dict of tensors")
    return sd


def read_shapes(path: str | Path) -> dict[str, torch.Tensor]:
    """Keys and shapes of a checkpoint as meta tensors, without reading the weights.

    For `persona models check`: an 11 GB encoder is listed in well under a second.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    return {k: torch.empty(v.shape, device="meta") for k, v in read_state_dict(path).items()}


def layout_problems(
    path: str | Path, expected: dict[str, torch.Size], adapt=None, what: str = ""
) -> list[str]:
    """Problems found comparing a file's layout with `expected` (empty list: it fits)."""
    try:
        got = read_shapes(path)
        if adapt is not None:
            got = adapt(got)
        check_layout(expected, got, what or str(path))
    except (CheckpointLayoutError, ValueError) as exc:
        return [str(exc)]
    return []


def check_layout(
    expected: dict[str, torch.Size | tuple[int, ...]],
    got: dict[str, torch.Tensor],
    what: str,
) -> None:
    """Raise `CheckpointLayoutError` naming missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(
        f"{k}: file {list(got[k].shape)} vs model {list(expected[k])}"
        for k in set(expected) & set(got)
        if tuple(got[k].shape) != tuple(expected[k])
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                shown = ", ".join(items[:6]) + (f", … ({len(items)} in all)" if len(items) > 6 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise CheckpointLayoutError(f"{what} does not match the checkpoint: " + "; ".join(parts))


def module_layout(module: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in module.state_dict().items()}


def load_into_meta(
    model: nn.Module, state: dict[str, torch.Tensor], what: str, device: str | torch.device, dtype: torch.dtype
) -> nn.Module:
    """`state` into `model` (built on meta: no storage is allocated twice) after a layout
    check naming every bad key (`check_layout`), then on `device` in `dtype`, in eval mode."""
    check_layout(module_layout(model), state, what)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def materialize(
    module: nn.Module, device: str | torch.device, dtype: torch.dtype, seed: int = 0
) -> nn.Module:
    """Give a meta-built module real (random) storage on `device` without CPU-side init.

    Throughput does not depend on weight values, so the benchmark builds real-size models
    this way in well under a second instead of running every module's default init.
    """
    module = module.to_empty(device=device)
    init_random_(module, seed)
    return module.to(dtype)


@torch.no_grad()
def init_random_(module: nn.Module, seed: int = 0) -> None:
    """Cheap, scale-aware random init: norms' gains 1, biases 0, weights ~ N(0, 1/fan_in)."""
    gens: dict[torch.device, torch.Generator] = {}
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma" or (leaf == "weight" and p.ndim == 1):
            p.fill_(1.0)
        elif leaf == "bias":
            p.zero_()
        else:
            gen = gens.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
