"""Reading checkpoint files strictly, building real-size models cheaply, and the one path every
model family (TAEHV, Wan VAE, UMT5) goes through: resolve config → build / load / check.

Shared by the decoders and the text encoder. A checkpoint that does not match our module
must fail loudly with the keys that differ: `load_state_dict(strict=True)` alone reports a
shape mismatch only after building the whole model, and a silent partial load (what PEFT
and `strict=False` do) would render garbage without an error.

`ModelFamily` holds what differs between families (how to read the config from a file's
shapes, how to build the module on meta, an optional layout conversion and an optional step
after loading); `resolve`, `build`, `load` and `check_file` are written once, here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from ...errors import ModelFileMissingError, PersonaError

__all__ = [
    "CheckpointLayoutError",
    "ModelFamily",
    "UnknownConfigError",
    "check_layout",
    "init_random_",
    "layout_problems",
    "materialize",
    "read_shapes",
    "read_state_dict",
]


class CheckpointLayoutError(PersonaError, ValueError):
    """A checkpoint's keys or shapes differ from the module it is loaded into."""

    code = "checkpoint_layout"


class UnknownConfigError(PersonaError, KeyError):
    """A config (preset) name that a model family does not know; the message lists the known ones."""

    code = "unknown_config"

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def named_config(kind: str, presets: dict[str, Any], name: str) -> Any:
    """`presets[name]`, or an `UnknownConfigError` listing the known names."""
    if name not in presets:
        raise UnknownConfigError(f"unknown {kind} config {name!r}; known: {', '.join(sorted(presets))}")
    return presets[name]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a bare state dict from `.safetensors` or a torch pickle, memory-mapped, tensors only.

    A `.pth` wrapped as {"state_dict": ...} or {"model": ...} is unwrapped, since people
    re-save checkpoints that way.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(path.name, purpose="checkpoint", source="the models directory "
                                    "(persona models check lists where each file is published)", looked_in=[path])
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


C = TypeVar("C")
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class ModelFamily(Generic[C, M]):
    """One kind of checkpoint (see the module docstring). Every loader of the family reads its
    sizes from the file it loads (`detect`), unless a config (or preset name) is given, which
    the file must then match."""

    what: str  # "TAEHV", "Wan VAE", "UMT5 encoder": named in every error
    presets: dict[str, C]
    detect: Callable[[dict[str, torch.Tensor]], C]  # config from a state dict's shapes
    build_meta: Callable[[C], M]  # the module, on the meta device
    #: The file's layout → the module's, before detection (e.g. Wan's T5 names → transformers').
    to_module_layout: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    #: The one allowed change given the built module (e.g. TAEHV's wider TGrow rows).
    adapt: Callable[[dict[str, torch.Tensor], M], dict[str, torch.Tensor]] | None = None
    after: Callable[[M], None] | None = None  # after build or load (e.g. tie embeddings)

    def config(self, name: str) -> C:
        return named_config(self.what, self.presets, name)

    def resolve(self, config: str | C | None, state: Callable[[], dict[str, torch.Tensor]]) -> C:
        """`config` None: detected from `state()`'s shapes; a name: that preset; else as given."""
        if config is None:
            return self.detect(state())
        return self.config(config) if isinstance(config, str) else config

    def _layout(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.to_module_layout(state) if self.to_module_layout is not None else state

    def _finish(self, model: M) -> M:
        if self.after is not None:
            self.after(model)
        return model

    def build(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              config: str | C | None = None, seed: int = 0) -> M:
        """A random-weight model of `config` (default: the first preset) on `device`, built on
        meta and materialized (benchmarks and tests: throughput does not depend on the values)."""
        if config is None:
            config = next(iter(self.presets))
        cfg = self.config(config) if isinstance(config, str) else config
        return self._finish(materialize(self.build_meta(cfg), device, dtype, seed).eval())

    def load(self, path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             config: str | C | None = None) -> M:
        """Load a file strictly (after the family's layout conversion and adaptation)."""
        state = self._layout(read_state_dict(path))
        model = self.build_meta(self.resolve(config, lambda: state))
        if self.adapt is not None:
            state = self.adapt(state, model)
        return self._finish(load_into_meta(model, state, f"{self.what} ({path})", device, dtype))

    def check_file(self, path, config: str | C | None = None) -> list[str]:
        """Layout problems of a file, reading shapes only (`persona models check`).

        `config` None: checked against the sizes the file itself has (any size passes if every
        key and shape fits that structure); a name or config: against that one."""
        try:
            cfg = self.resolve(config, lambda: self._layout(read_shapes(path)))
        except CheckpointLayoutError as exc:
            return [str(exc)]
        model = self.build_meta(cfg)

        def adapt(shapes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            shapes = self._layout(shapes)
            return self.adapt(shapes, model) if self.adapt is not None else shapes

        return layout_problems(path, module_layout(model), adapt=adapt, what=self.what)
