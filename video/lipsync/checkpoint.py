"""The released MuseTalk 1.5 files: where they are, what they hold, loading them strictly.

Layout of the models directory (the `models/` folder of MuseTalk's `download_weights.sh`,
under `musetalk/`), registered in `video/model_files.py` so `persona models check` lists it:

    musetalk/musetalkV15/unet.pth (+ musetalk.json)    torch.save of the UNet's state dict
    musetalk/sd-vae/diffusion_pytorch_model.bin (+ config.json)   or .safetensors
    musetalk/whisper/pytorch_model.bin (+ config.json)           or model.safetensors
    musetalk/taesd/diffusion_pytorch_model.safetensors (+ config.json)   instead of sd-vae,
        only with autoencoder="taesd" (madebyollin/taesd, diffusers' AutoencoderTiny layout)

Key facts, each pinned by a manifest in tests/fixtures/lipsync/ (docs/lipsync.md):

- `unet.pth` is a bare diffusers `UNet2DConditionModel` state dict (MuseTalk's training
  saves `net.unet.state_dict()`), loaded strictly.
- sd-vae-ft-mse was saved by diffusers 0.4 in the *legacy* attention layout: the mid-block
  attention's `query`/`key`/`value`/`proj_attn` are today's `to_q`/`to_k`/`to_v`/`to_out.0`
  (diffusers renames them on load, `_convert_deprecated_attention_blocks`).
  `convert_vae_state` does the same rename; files in either layout load.
- The Whisper file is the whole speech-recognition model (`WhisperForConditionalGeneration`,
  keys `model.encoder.*`, `model.decoder.*`, `proj_out.weight` tied to the token embedding);
  only the encoder is read, strictly. Decoder keys are allowed and skipped; anything else is
  an error. A `WhisperModel` save (`encoder.*`, `decoder.*`) loads too.

A config file beside a weight file (`musetalk.json`, `config.json`) is read for the shape
fields only; without one the public preset applies. Either way every key and shape is
checked before any weight is copied (`decoders.checkpoint.check_layout`), and a missing file
raises `ModelFileMissingError` naming it, its size and where it is published.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import ModelFileMissingError
from ..decoders.checkpoint import (
    CheckpointLayoutError,
    check_layout,
    init_random_,
    module_layout,
    read_shapes,
    read_state_dict,
)
from .config import PRESETS, MuseTalkConfig, preset_with
from .model import MuseTalk, build_on_meta

__all__ = [
    "FILE_KEYS",
    "LipSyncFiles",
    "check_taesd_file",
    "check_unet_file",
    "check_vae_file",
    "check_whisper_file",
    "config_for_files",
    "convert_vae_state",
    "file_keys",
    "find_lipsync_files",
    "load_musetalk",
    "materialize_musetalk",
    "released_layouts",
    "whisper_encoder_state",
]

#: `video/model_files.py` keys of the three weight files (the VAE's for autoencoder "sd-vae").
FILE_KEYS = {"unet": "musetalk.unet", "vae": "musetalk.vae", "whisper": "musetalk.whisper"}
#: The VAE part's file key for each autoencoder (`config.AUTOENCODERS`).
VAE_FILE_KEYS = {"sd-vae": "musetalk.vae", "taesd": "musetalk.taesd"}
#: Config file beside each weight file (MuseTalk's release names).
CONFIG_NAMES = {"unet": "musetalk.json", "vae": "config.json", "whisper": "config.json"}

_LEGACY_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_WHISPER_PREFIXES = ("model.encoder.", "encoder.")
_WHISPER_SKIPPED = ("model.decoder.", "decoder.", "proj_out.")


# --------------------------------------------------------------------------- conversions


def convert_vae_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """sd-vae-ft-mse's legacy mid-block attention names → diffusers' current ones.

    `<enc|dec>oder.mid_block.attentions.0.{query,key,value,proj_attn}.*` become
    `...{to_q,to_k,to_v,to_out.0}.*`; every other key is kept as is (current-layout files
    pass through unchanged).
    """
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) >= 5 and parts[1:4] == ["mid_block", "attentions", "0"] and parts[4] in _LEGACY_VAE_ATTENTION:
            key = ".".join([*parts[:4], _LEGACY_VAE_ATTENTION[parts[4]], *parts[5:]])
        out[key] = value
    return out


def whisper_encoder_state(state: dict[str, torch.Tensor], what: str = "Whisper file") -> dict[str, torch.Tensor]:
    """The encoder's keys of a Whisper checkpoint, prefix stripped; decoder keys skipped.

    Raises `CheckpointLayoutError` for keys that belong to neither part (another model's file).
    """
    encoder, foreign = {}, []
    for key, value in state.items():
        prefix = next((p for p in _WHISPER_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            encoder[key[len(prefix) :]] = value
        elif not key.startswith(_WHISPER_SKIPPED):
            foreign.append(key)
    if foreign:
        shown = ", ".join(sorted(foreign)[:6]) + (f", … ({len(foreign)} in all)" if len(foreign) > 6 else "")
        raise CheckpointLayoutError(f"{what} has keys of no Whisper model: {shown}")
    if not encoder:
        raise CheckpointLayoutError(f"{what} holds no Whisper encoder (no model.encoder.* or encoder.* keys)")
    return encoder


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class LipSyncFiles:
    """The three weight files, resolved to existing paths; `vae` is `autoencoder`'s file."""

    unet: Path
    vae: Path
    whisper: Path
    autoencoder: str = "sd-vae"


def file_keys(autoencoder: str = "sd-vae") -> dict[str, str]:
    """{part: `video/model_files.py` key} of the files MuseTalk with `autoencoder` loads."""
    preset_with("musetalk-1.5", autoencoder)  # an unknown autoencoder is refused by name
    return {**FILE_KEYS, "vae": VAE_FILE_KEYS[autoencoder]}


def _missing(key: str, looked_in: list[Path], hint: str = "") -> ModelFileMissingError:
    from .. import model_files

    spec = model_files.FILES[key]
    return ModelFileMissingError(
        spec.filename, purpose=spec.purpose, source=spec.source, looked_in=looked_in,
        size_bytes=spec.size_bytes, size_exact=spec.size_exact, hint=hint,
    )


def find_lipsync_files(
    models_dir: str | os.PathLike | None = None,
    *,
    unet: str | os.PathLike | None = None,
    vae: str | os.PathLike | None = None,
    whisper: str | os.PathLike | None = None,
    autoencoder: str = "sd-vae",
) -> LipSyncFiles:
    """Resolve each file: the explicit path given, else its registered names in the models
    directory (argument, $PERSONA_MODELS_DIR, default). `vae` is the file of `autoencoder`
    ("sd-vae" or "taesd"). Raises `ModelFileMissingError` for the first one not there."""
    from .. import model_files

    keys = file_keys(autoencoder)
    base = model_files.models_dir(models_dir)
    found = {}
    for part, explicit in (("unet", unet), ("vae", vae), ("whisper", whisper)):
        key = keys[part]
        if explicit is not None and str(explicit).strip():
            path = Path(explicit).expanduser()
            if not path.is_file():
                raise _missing(key, [path], "The path was given explicitly (a node input or an argument).")
            found[part] = path
            continue
        try:
            found[part] = model_files.find(key, base)
        except model_files.CheckpointNotFoundError:
            names = [base / name for name in model_files.FILES[key].names]
            raise _missing(key, names, f"Put it in {base} (or set {model_files.ENV_VAR}).") from None
    return LipSyncFiles(**found, autoencoder=autoencoder)


def _shape_fields(part: str, preset: MuseTalkConfig) -> set[str]:
    return set({"unet": preset.unet_kwargs, "vae": preset.vae_kwargs, "whisper": preset.whisper_kwargs}[part]())


def _read_config(part: str, weight: Path, preset: MuseTalkConfig) -> dict | None:
    path = weight.parent / CONFIG_NAMES[part]
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointLayoutError(f"{path}: not a readable JSON config ({exc})") from exc
    fields = _shape_fields(part, preset)
    return {k: v for k, v in raw.items() if k in fields}


def config_for_files(files: LipSyncFiles, preset: str = "musetalk-1.5") -> MuseTalkConfig:
    """The preset (with the files' autoencoder), with the shape fields of each config file
    found beside its weight file."""
    base = MuseTalkConfig.from_name(preset_with(preset, files.autoencoder))
    parts = {}
    for part in ("unet", "vae", "whisper"):
        found = _read_config(part, getattr(files, part), base)
        if found:
            parts[part] = {**getattr(base, f"{part}_kwargs")(), **found}
    if not parts:
        return base
    cfg = base.replace(**parts)
    same = [p for p in PRESETS.values() if (p.unet, p.vae, p.whisper) == (cfg.unet, cfg.vae, cfg.whisper)]
    return same[0] if same else dataclasses.replace(cfg, name=f"{base.name} with sizes from config files")


# --------------------------------------------------------------------------- layouts


def _expected(model: MuseTalk, part: str) -> dict[str, torch.Size]:
    return module_layout(getattr(model, part))


def released_layouts(cfg: MuseTalkConfig) -> dict[str, dict[str, list[int]]]:
    """Every key and shape each released file holds for `cfg`, in the file's own layout.

    `unet`: the bare UNet state dict. `vae`: legacy attention names (as sd-vae-ft-mse was
    saved). `whisper_encoder`: the keys the loader reads (`model.encoder.*`);
    `whisper_skipped`: the decoder keys it accepts and skips (the file also holds
    `proj_out.weight` where its saver wrote tied weights twice). Built on the meta device.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    model = build_on_meta(cfg)
    legacy = {v: k for k, v in _LEGACY_VAE_ATTENTION.items()}

    def to_legacy(key: str) -> str:
        for new, old in legacy.items():
            marker = f".mid_block.attentions.0.{new}."
            if marker in key:
                return key.replace(marker, f".mid_block.attentions.0.{old}.")
        return key

    with torch.device("meta"):
        full = WhisperForConditionalGeneration(WhisperConfig(**cfg.whisper_kwargs()))
    whisper = {k: list(v.shape) for k, v in full.state_dict().items()}
    return {
        "unet": {k: list(v) for k, v in _expected(model, "unet").items()},
        "vae": {to_legacy(k): list(v) for k, v in _expected(model, "vae").items()},
        "whisper_encoder": {k: v for k, v in whisper.items() if k.startswith("model.encoder.")},
        "whisper_skipped": {k: v for k, v in whisper.items() if not k.startswith("model.encoder.")},
    }


def _file_state(part: str, path: Path) -> dict[str, torch.Tensor]:
    state = read_state_dict(path)
    if part == "vae":
        return convert_vae_state(state)
    if part == "whisper":
        return whisper_encoder_state(state, str(path))
    return state


def _shapes(part: str, path: Path) -> dict[str, torch.Tensor]:
    state = read_shapes(path)
    if part == "vae":
        return convert_vae_state(state)
    if part == "whisper":
        return whisper_encoder_state(state, str(path))
    return state


def _check_file(part: str, path, preset: str = "musetalk-1.5") -> list[str]:
    path = Path(path)
    try:
        base = MuseTalkConfig.from_name(preset)
        found = _read_config(part, path, base)
        cfg = base.replace(**{part: {**getattr(base, f"{part}_kwargs")(), **found}}) if found else base
        check_layout(_expected(build_on_meta(cfg), part), _shapes(part, path), f"MuseTalk {part} ({cfg.name})")
    except (CheckpointLayoutError, ValueError) as exc:
        return [str(exc)]
    return []


def check_unet_file(path) -> list[str]:
    """`persona models check`: layout problems of `unet.pth` (empty: it fits)."""
    return _check_file("unet", path)


def check_vae_file(path) -> list[str]:
    """`persona models check`: layout problems of the sd-vae-ft-mse file."""
    return _check_file("vae", path)


def check_taesd_file(path) -> list[str]:
    """`persona models check`: layout problems of the TAESD file (autoencoder "taesd")."""
    return _check_file("vae", path, "musetalk-1.5-taesd")


def check_whisper_file(path) -> list[str]:
    """`persona models check`: layout problems of the whisper-tiny file (encoder part)."""
    return _check_file("whisper", path)


# --------------------------------------------------------------------------- loading


def load_musetalk(
    files: LipSyncFiles | None = None,
    *,
    models_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    preset: str = "musetalk-1.5",
    autoencoder: str = "sd-vae",
) -> MuseTalk:
    """Build on the meta device, check every key and shape of the three files, load with
    `strict=True, assign=True`, move to `device`/`dtype`. Without `files`, they are found in
    the models directory for `autoencoder`. Missing files raise `ModelFileMissingError`; a
    wrong layout raises `CheckpointLayoutError` naming the keys."""
    files = files or find_lipsync_files(models_dir, autoencoder=autoencoder)
    cfg = config_for_files(files, preset)
    model = build_on_meta(cfg)
    for part in ("unet", "vae", "whisper"):
        path = getattr(files, part)
        state = _file_state(part, path)
        module = getattr(model, part)
        check_layout(module_layout(module), state, f"MuseTalk {part} ({path})")
        module.load_state_dict(state, strict=True, assign=True)
    model.reset_buffers()
    return model.to(device=device, dtype=dtype).eval()


def materialize_musetalk(
    cfg: MuseTalkConfig | str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> MuseTalk:
    """Random weights at `cfg`'s real size without CPU-side init: for benchmarks (speed does
    not depend on the values) and the tiny test models."""
    cfg = PRESETS[cfg] if isinstance(cfg, str) else cfg
    model = build_on_meta(cfg).to_empty(device=device)
    init_random_(model, seed)
    model.reset_buffers()
    return model.to(dtype).eval()
