"""Loading the LongLive engine once: weights → runtime (compile, FP8, CUDA graphs) → the host.

`load_engine(settings, files)` builds what every session of a loaded engine shares: the DiT with
its LoRA merged, q/k/v fused and (on Hopper+, by default) its block linears in FP8; the
`EngineRuntime` (torch.compile on a GPU by default, CUDA graphs); UMT5; the decoder; and one
`EngineHost`, which serves that engine's sessions batched. With compile on a GPU and a
`warmup_size`, the compile warm-up runs here, reporting progress, so the first session does
not wait for it (Inductor's cache on disk makes a restart's warm-up short).

Every loader reads its architecture from the file it loads (config detection): the DiT preset
from the generator's shapes (or the named `settings.preset`, checked strictly), UMT5's sizes,
the decoder's widths. The UMT5 encoder pads to the DiT's `text_len`.

Where each file comes from is `EngineFiles`: by default every file is looked up in one models
directory (`video.model_files`); a host such as ComfyUI can name each file's path instead
(its shared `diffusion_models`, `loras`, `text_encoders`, `vae`, `vae_approx` folders).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backend import RenderError
from .host import EngineHost
from .runtime import EngineRuntime

log = logging.getLogger(__name__)

#: Files the engine always loads (keys of video.model_files), and the decoder's by choice.
ENGINE_FILES = ("longlive.generator", "longlive.lora", "umt5.encoder", "umt5.tokenizer")
DECODER_FILES = {"tae": "taew2.1", "vae": "wan2.1.vae"}


@dataclass(frozen=True)
class EngineFiles:
    """Where each file of the engine is: a models directory, and per-file paths that win over it."""

    models_dir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)  # model-file key → path

    def find(self, key: str) -> Path:
        from .. import model_files

        if key in self.paths:
            path = Path(self.paths[key])
            if not path.is_file():
                spec = model_files.FILES[key]
                raise model_files.CheckpointNotFoundError(spec, path.parent)
            return path
        return model_files.find(key, self.models_dir)

    def missing(self, decoder: str) -> list:
        """The `CheckpointNotFoundError` of every file the engine needs that is not there."""
        from .. import model_files

        problems = []
        for key in (*ENGINE_FILES, DECODER_FILES[decoder]):
            try:
                self.find(key)
            except model_files.CheckpointNotFoundError as exc:
                problems.append(exc)
        return problems


@dataclass(eq=False)
class LoadedEngine:
    """One loaded engine: shared by every session that streams on it (through `host`)."""

    settings: object  # LongLiveSettings
    files: EngineFiles
    runtime: EngineRuntime
    text_encoder: object
    decoder: object
    host: EngineHost
    warmup_s: float | None = None

    @property
    def model(self):
        return self.runtime.model

    def release_caches(self) -> None:
        """Free what the sessions hold on the GPU (KV windows, CUDA graphs): every session on this
        engine ends (its next request starts a new stream). For ComfyUI's "Unload models"."""
        for session in list(self.host.sessions):
            session.close()
        self.runtime.store = None
        self.runtime.drop_cuda_graphs()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def reset_after_move(self) -> None:
        """The weights were moved (offloaded and loaded back): graphs captured with the old
        addresses go; the compiled code and the sessions' caches stay valid."""
        self.runtime.drop_cuda_graphs()


def engine_from_parts(model, text_encoder, decoder, settings=None, files: EngineFiles | None = None) -> LoadedEngine:
    """A `LoadedEngine` around parts built elsewhere (tests, benchmarks): model (or runtime),
    text encoder, decoder."""
    from .settings import LongLiveSettings

    settings = settings or LongLiveSettings()
    runtime = model if isinstance(model, EngineRuntime) else EngineRuntime(model)
    host = EngineHost(runtime, decoder, max_sessions=settings.max_sessions)
    return LoadedEngine(settings, files or EngineFiles(), runtime, text_encoder, decoder, host)


def decoder_dtype(device, decoder: str) -> torch.dtype:
    """float32 on CPU. On a GPU: float16 for TAEW2.1 (as its authors run it); bfloat16 for the
    Wan VAE, which keeps float32's range (Wan's code and diffusers' examples run it in float32,
    and a deep conv stack's activations can leave float16's)."""
    if not str(device).startswith("cuda"):
        return torch.float32
    return torch.float16 if decoder == "tae" else torch.bfloat16


def prepare_runtime(model, speed) -> EngineRuntime:
    """The loaded (LoRA-merged) model as the engine runs it: q/k/v fused, FP8 block linears if
    `speed.fp8`, FlashAttention-4 for long keys if `speed.flash_attention`, compiled if
    `speed.compile`, CUDA graphs if `speed.cuda_graphs` (a
    `settings.ResolvedSpeed`). Shared by `load_engine` and the benchmarks (random weights)."""
    model.fuse_qkv()  # after the LoRA merge, which names q, k, v
    if speed.fp8:
        from .fp8 import quantize_blocks_fp8

        quantize_blocks_fp8(model)  # after the LoRA merge: quantise the final weights
    runtime = EngineRuntime(model)  # after every change to the weights
    if speed.flash_attention:
        runtime.use_flash_attention(required=speed.flash_required)
    if speed.compile:
        runtime.compile(speed.compile_mode)
    runtime.use_cuda_graphs(speed.cuda_graphs)
    return runtime


def prepare_decoder(decoder, speed):
    """The decoder as the engine runs it: the TAE compiled on a GPU when the DiT is."""
    from ..decoders.taehv import TAEHV

    if speed.compile and isinstance(decoder, TAEHV) and next(decoder.parameters()).is_cuda:
        decoder.compile()
    return decoder


def load_engine(settings=None, files: EngineFiles | str | Path | None = None, *,
                progress: Callable[[int, int], None] | None = None, device: str | None = None) -> LoadedEngine:
    """Load every part once (see the module docstring). Raises `CheckpointNotFoundError` naming
    the first missing file."""
    from ..attention.flash import flash_missing
    from ..decoders.taehv import load_taehv
    from ..decoders.wan_vae import load_wan_vae
    from ..text.umt5 import UMT5TextEncoder, load_tokenizer, load_umt5
    from .checkpoint import load_generator, read_generator_state, resolve_config
    from .lora import merge_lora, read_lora_state
    from .model import cast_for_inference
    from .settings import LongLiveSettings

    settings = settings or LongLiveSettings()
    if not isinstance(files, EngineFiles):
        files = EngineFiles(models_dir=Path(files) if files is not None else None)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    capability = torch.cuda.get_device_capability(device) if device.startswith("cuda") else None
    speed = settings.resolved(device, capability)
    dtype = getattr(torch, settings.dtype)
    generator = files.find("longlive.generator")
    lora = files.find("longlive.lora")
    encoder_path, tokenizer_path = files.find("umt5.encoder"), files.find("umt5.tokenizer")
    decoder_path = files.find(DECODER_FILES[settings.decoder])
    cfg = settings.wan_config(resolve_config(read_generator_state(generator), settings.preset, str(generator)))
    model = load_generator(generator, cfg)
    merge_lora(model, read_lora_state(lora))
    runtime = prepare_runtime(cast_for_inference(model.to(device), dtype).eval(), speed)
    if runtime.flash_attention:
        log.info("LongLive: self-attention on FlashAttention-4 (flash-attn-4), the rest on cuDNN")
    elif settings.attention_kernel == "auto" and capability is not None and capability[0] == 9 and flash_missing():
        log.info("LongLive: self-attention on cuDNN; with flash-attn-4 installed (pip install "
                 "'comfyui-persona[flash]') it runs on FlashAttention-4, faster at 480x832 (docs/attention.md)")
    umt5 = load_umt5(encoder_path, device, dtype)
    if umt5.config.d_model != cfg.text_dim:
        raise RenderError(
            f"the text encoder ({encoder_path}) makes {umt5.config.d_model}-d embeddings but the "
            f"generator reads {cfg.text_dim}-d ones: the two files are from different model sets"
        )
    encoder = UMT5TextEncoder(umt5, load_tokenizer(tokenizer_path), text_len=cfg.text_len)
    load = load_taehv if settings.decoder == "tae" else load_wan_vae
    decoder = prepare_decoder(load(decoder_path, device=device, dtype=decoder_dtype(device, settings.decoder)), speed)
    host = EngineHost(runtime, decoder, max_sessions=settings.max_sessions, preempt=settings.preempt,
                      prefetch=settings.fill_batches)
    engine = LoadedEngine(settings, files, runtime, encoder, decoder, host)
    if speed.warmup_hw is not None:
        h, w = speed.warmup_hw
        stride = cfg.vae_stride[1]
        log.info("LongLive: compiling for %dx%d (warm-up; cached on disk for the next start)", h, w)
        engine.warmup_s = host.warm_up(h // stride, w // stride, batch_sizes=speed.warmup_batches,
                                        progress=progress)
    return engine
