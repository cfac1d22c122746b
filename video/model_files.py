"""The models directory: which weight files the engine needs, where they are, and what is wrong.

Weights are never downloaded (ARCHITECTURE.md). A user puts them in the models directory
(`PERSONA_MODELS_DIR`, default `~/.cache/comfyui-persona/models`); a missing file is a
`CheckpointNotFoundError` that names the file, its expected size and where it is published.

Each component registers its files here with `register(ModelFile(...))` at import of this
module's registry list (`FILES`), so `persona models check` can list all of them. A file may
name a layout checker, "module:function" relative to `comfyui_persona.video`, called as
`checker(path) -> list[str]` (problems found; empty = layout fits). Checkers import torch;
this module does not, so listing files stays cheap.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileMissingError, PersonaError

ENV_VAR = "PERSONA_MODELS_DIR"
DEFAULT_DIR = Path("~/.cache/comfyui-persona/models")


class CheckpointNotFoundError(ModelFileMissingError):
    """A weight file the engine needs is not in the models directory (the payload names the
    file, its size and where it is published: `errors.ModelFileMissingError`)."""

    def __init__(self, spec: ModelFile, directory: Path, extra_dirs: tuple[Path, ...] = ()) -> None:
        self.spec, self.directory = spec, directory
        looked = [folder / name for folder in (*extra_dirs, directory) for name in spec.names]
        super().__init__(
            spec.filename, purpose=spec.purpose, source=spec.source, looked_in=looked,
            size_bytes=spec.size_bytes, size_exact=spec.size_exact,
            hint=f"Put it in {directory} (or set {ENV_VAR}).",
        )

    def __reduce__(self):
        return (CheckpointNotFoundError, (self.spec, self.directory))


class DuplicateModelFileError(PersonaError, ValueError):
    """Two components registered the same file key."""


@dataclass(frozen=True)
class ModelFile:
    """One weight file the product can use.

    `filename` is relative to the models directory; `alternatives` are other accepted names
    (another published layout of the same weights). `size_bytes` is the expected size;
    `size_exact` says whether it was measured on the real file or estimated from the
    parameter count and dtype. `instead_of`: the key of a file this one can replace (either of
    the two is enough).
    """

    key: str
    filename: str
    purpose: str
    source: str
    size_bytes: int
    size_exact: bool = False
    alternatives: tuple[str, ...] = ()
    checker: str | None = None
    instead_of: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.filename, *self.alternatives)

    @property
    def size_text(self) -> str:
        about = "" if self.size_exact else "about "
        if self.size_bytes >= 2**30:
            return f"{about}{self.size_bytes / 2**30:.2f} GiB"
        return f"{about}{self.size_bytes / 2**20:.0f} MiB"


FILES: dict[str, ModelFile] = {}


def register(spec: ModelFile) -> ModelFile:
    """Add a file to the registry; a second registration of the same key is an error."""
    if spec.key in FILES and FILES[spec.key] != spec:
        raise DuplicateModelFileError(f"model file key {spec.key!r} is registered twice")
    FILES[spec.key] = spec
    return spec


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """The models directory: the argument, else $PERSONA_MODELS_DIR, else the default."""
    chosen = override or os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(chosen).expanduser()


def find(key: str, directory: str | os.PathLike | None = None) -> Path:
    """Path of a registered file; `CheckpointNotFoundError` if none of its names exists."""
    spec = FILES[key]
    base = models_dir(directory)
    for name in spec.names:
        if (base / name).is_file():
            return base / name
    raise CheckpointNotFoundError(spec, base)


@dataclass
class FileStatus:
    spec: ModelFile
    path: Path | None
    size_bytes: int | None
    problems: list[str]

    @property
    def present(self) -> bool:
        return self.path is not None


def _load_checker(ref: str) -> Callable[[Path], list[str]]:
    module, _, func = ref.partition(":")
    return getattr(importlib.import_module(module, package=__package__), func)


def check(directory: str | os.PathLike | None = None, *, layouts: bool = True) -> list[FileStatus]:
    """Status of every registered file: present or not, its size, layout problems."""
    base = models_dir(directory)
    out = []
    for spec in FILES.values():
        try:
            path = find(spec.key, base)
        except CheckpointNotFoundError:
            out.append(FileStatus(spec, None, None, []))
            continue
        problems: list[str] = []
        if layouts and spec.checker:
            try:
                problems = list(_load_checker(spec.checker)(path))
            except Exception as exc:  # a broken file must be reported, not crash the listing
                problems = [f"could not read: {type(exc).__name__}: {exc}"]
        out.append(FileStatus(spec, path, path.stat().st_size, problems))
    return out


# --------------------------------------------------------------------------- LongLive (H4a)
# Sizes: parameter counts from tests/fixtures/checkpoints/*.json x 4 bytes (float32 on disk,
# inferred from the published file sizes, not measured here).
register(ModelFile(
    key="longlive.generator",
    filename="longlive/longlive_base.pt",
    purpose="LongLive generator (causal Wan2.1-T2V-1.3B DiT)",
    source="https://huggingface.co/Efficient-Large-Model/LongLive-1.3B (models/longlive_base.pt)",
    size_bytes=1_418_996_800 * 4,
    alternatives=("longlive_base.pt",),
    checker=".longlive.checkpoint:check_generator_file",
))
register(ModelFile(
    key="longlive.lora",
    filename="longlive/lora.pt",
    purpose="LongLive LoRA (r=256), merged into the generator at load",
    source="https://huggingface.co/Efficient-Large-Model/LongLive-1.3B (models/lora.pt)",
    size_bytes=349_962_240 * 4,
    alternatives=("lora.pt",),
    checker=".longlive.lora:check_lora_file",
))

# --------------------------------------------------------------------------- text + decoders
register(ModelFile(
    key="umt5.encoder",
    filename="models_t5_umt5-xxl-enc-bf16.pth",
    purpose="UMT5-XXL text encoder, Wan layout",
    source="https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B (models_t5_umt5-xxl-enc-bf16.pth)",
    size_bytes=11_361_820_672,
    checker=".text.umt5:check_umt5_file",
))
register(ModelFile(
    key="umt5.tokenizer",
    filename="umt5-xxl/tokenizer.json",
    purpose="UMT5 tokenizer",
    source="https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B (google/umt5-xxl/tokenizer.json)",
    size_bytes=16_800_000,
    alternatives=("umt5-xxl/spiece.model",),
    checker=".text.umt5:check_tokenizer_file",
))
register(ModelFile(
    key="taew2.1",
    filename="taew2_1.pth",
    purpose="TAEW2.1 tiny decoder (real-time decode)",
    source="https://huggingface.co/madebyollin/taehv (taew2_1.pth or safetensors/taew2_1.safetensors)",
    size_bytes=22_700_000,
    alternatives=("taew2_1.safetensors",),
    checker=".decoders.taehv:check_taehv_file",
))
register(ModelFile(
    key="wan2.1.vae",
    filename="Wan2.1_VAE.pth",
    purpose="Wan 2.1 video VAE (full-quality decode, reference-image encode)",
    source="https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B (Wan2.1_VAE.pth)",
    size_bytes=507_600_000,
    checker=".decoders.wan_vae:check_wan_vae_file",
))


# --------------------------------------------------------------------------- lip-sync (MuseTalk 1.5)
# Optional: only the lip-sync stage and the Persona Lip Sync node read them (docs/lipsync.md).
# The folder under musetalk/ is MuseTalk's own `models/` layout (download_weights.sh). Sizes:
# parameter counts of tests/fixtures/lipsync/*.json x 4 bytes (float32 on disk; estimated).
register(ModelFile(
    key="musetalk.unet",
    filename="musetalk/musetalkV15/unet.pth",
    purpose="MuseTalk 1.5 lip-sync UNet (optional: lip-sync stage)",
    source="https://huggingface.co/TMElyralab/MuseTalk (musetalkV15/unet.pth and musetalk.json)",
    size_bytes=849_947_844 * 4,
    alternatives=("musetalkV15/unet.pth",),
    checker=".lipsync.checkpoint:check_unet_file",
))
register(ModelFile(
    key="musetalk.vae",
    filename="musetalk/sd-vae/diffusion_pytorch_model.bin",
    purpose="sd-vae-ft-mse image autoencoder of MuseTalk (optional: lip-sync stage)",
    source="https://huggingface.co/stabilityai/sd-vae-ft-mse (diffusion_pytorch_model.bin or .safetensors, config.json)",
    size_bytes=83_653_863 * 4,
    alternatives=("musetalk/sd-vae/diffusion_pytorch_model.safetensors",),
    checker=".lipsync.checkpoint:check_vae_file",
))
register(ModelFile(
    key="musetalk.taesd",
    filename="musetalk/taesd/diffusion_pytorch_model.safetensors",
    purpose="TAESD tiny image autoencoder (optional: lip-sync stage with autoencoder taesd, instead of sd-vae)",
    source="https://huggingface.co/madebyollin/taesd (diffusion_pytorch_model.safetensors, config.json)",
    size_bytes=2_445_063 * 4,
    alternatives=("musetalk/taesd/diffusion_pytorch_model.bin",),
    checker=".lipsync.checkpoint:check_taesd_file",
    instead_of="musetalk.vae",
))
register(ModelFile(
    key="musetalk.whisper",
    filename="musetalk/whisper/pytorch_model.bin",
    purpose="Whisper-tiny audio encoder of MuseTalk (optional: lip-sync stage)",
    source="https://huggingface.co/openai/whisper-tiny (pytorch_model.bin or model.safetensors, config.json)",
    size_bytes=37_760_640 * 4,
    alternatives=("musetalk/whisper/model.safetensors",),
    checker=".lipsync.checkpoint:check_whisper_file",
))
