"""What a user may set on the LongLive engine: one pydantic model drives validation, the ComfyUI
nodes' inputs (nodes/settings_inputs.py generates them from these fields) and headless.

Every field has bounds, a description and `json_schema_extra={"ui": {"order", "is_load_param"}}`
(STYLE.md house rule 12); load-time fields rebuild the engine (the loader node), the others
apply live (the sampler node). Speed settings default to "auto": on a GPU that supports them
(compile on any CUDA card, FP8 block linears on Hopper and newer) the fast path is the
default, bf16/eager are explicit choices; `resolved()` says what "auto" became. Measured
figures for each choice are in benchmarks/results/longlive-*.json (benchmarks/README.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..attention.config import SparseAttentionConfig
from .config import WanConfig

#: The Wan presets a user may name (video/longlive/config.py), plus "auto" (detected).
PRESET_CHOICES = ("auto", "wan2.1-t2v-1.3b", "tiny", "tiny-engine")
#: When a blend between prompts re-caches the KV window. "last": once, after the chunk that
#: reaches the new prompt (a stock LongLive switch's one re-cache); each step before it only
#: sets the text, and its chunk sees the window as the chunks before left it, as the first
#: changed chunk does with the "after" timing. "each": after every step's chunk (before
#: 2026-12-07). Why "last" is the default: a stock re-cache is a pass over the whole window,
#: 131 ms at 480x832 on an H100 against 49 ms for the chunk's refresh it replaces, and with
#: the default two-step blend a directive and its return to rest cost four of them (two with
#: "last"; tests/test_longlive_engine.py counts them); three paced sessions at 480x832 with a
#: directive every 1.5-3 s each fell short of real time
#: (longlive-serving-h100-2026-12-07-wave11-joiners-paced-3-480.json). "last" against "each" side
#: by side on an H100 (cuDNN attention): longlive-serving-h100-2026-12-07-wave12-blend-recache-cudnn-paced-3-480.json.
BLEND_RECACHE = ("last", "each")


def _ui(order: int, *, load: bool, **extra: Any) -> dict[str, Any]:
    return {"ui": {"order": order, "is_load_param": load, **extra}}


def _on_off(value: Any) -> Any:
    """Booleans from workflows saved when these were switches: True → "on", False → "off"."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


class LongLiveSettings(BaseModel):
    """What a user may set on the LongLive engine. Load-time fields rebuild the engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["auto", "wan2.1-t2v-1.3b", "tiny", "tiny-engine"] = Field(
        "auto",
        description="Architecture preset; auto = the one whose shapes the checkpoint has (a name must match it).",
        json_schema_extra=_ui(0, load=True, component="select"),
    )
    decoder: Literal["tae", "vae"] = Field(
        "tae", description="Latent decoder: TAEW2.1 (real time) or the full Wan VAE.",
        json_schema_extra=_ui(1, load=True, component="select"),
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Compute dtype of the DiT.", json_schema_extra=_ui(2, load=True, component="select"),
    )
    local_attn_size: int = Field(
        12, ge=6, le=30, multiple_of=3,
        description="Latent frames of context a chunk attends to (sink included).",
        json_schema_extra=_ui(3, load=True),
    )
    sink_size: int = Field(
        3, ge=0, le=12, multiple_of=3,
        description="Latent frames at the start kept in the cache (identity anchor).",
        json_schema_extra=_ui(4, load=True),
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile the transformer block and, on a GPU, the TAE decode. auto = on with a CUDA "
        "GPU: a compile warm-up at load (progress shown; Inductor's cache on disk makes restarts quick), "
        "faster chunks after. off = eager.",
        json_schema_extra=_ui(5, load=True, component="select"),
    )
    compile_mode: Literal["default", "max-autotune"] = Field(
        "default",
        description="Inductor mode when compiling. default: Inductor's default, its generated kernels tuned at "
        "the first compile (cached on disk). max-autotune times Triton GEMM templates (FP8 included) "
        "against cuBLAS per shape: minutes more warm-up the first time (cached on disk), maybe faster chunks.",
        json_schema_extra=_ui(6, load=True, component="select"),
    )
    linear_precision: Literal["auto", "bf16", "fp8"] = Field(
        "auto",
        description="Block linear layers in the compute dtype (bf16) or FP8 e4m3 (slightly different numbers, "
        "faster). auto = fp8 on Hopper or newer GPUs, bf16 elsewhere. video/longlive/fp8.py.",
        json_schema_extra=_ui(7, load=True, component="select"),
    )
    cuda_graphs: bool = Field(
        True,
        description="On a GPU, replay each steady-state DiT pass as one CUDA graph instead of launching "
        "every kernel, so the scheduler never waits for the host between passes (video/longlive/runtime.py); "
        "falls back, with a warning, if capture fails.",
        json_schema_extra=_ui(8, load=True),
    )
    max_sessions: int = Field(
        4, ge=1, le=16,
        description="Sessions of one frame size one loaded engine serves at once, batched into one forward "
        "per denoising pass (a session of another size, or one more, gets a clear 'busy'). The warm-up at load "
        "runs batches of every size up to it, so a session joining never waits for a compile or a graph capture.",
        json_schema_extra=_ui(9, load=True),
    )
    warmup_size: str = Field(
        "480x832",
        description="HxW compiled at load (with compile), so the first session starts without the compile "
        "wait; empty = compile at the first session instead.",
        json_schema_extra=_ui(10, load=True),
    )
    attention_kernel: Literal["auto", "flash", "cudnn"] = Field(
        "auto",
        description="Self-attention kernel on a GPU. auto = FlashAttention-4 on Hopper when the flash-attn-4 "
        "package is installed (the [flash] extra; faster at 480x832), else cuDNN. flash = require it (the load "
        "fails naming why it cannot run). cudnn = PyTorch SDPA, cuDNN first. video/attention/flash.py.",
        json_schema_extra=_ui(11, load=True, component="select"),
    )
    denoising_steps: int = Field(
        4, ge=1, le=4,
        description="Denoising steps per chunk, taken from the start of LongLive's 4-step list.",
        json_schema_extra=_ui(20, load=False),
    )
    prompt_switch_recache: Literal["before", "after"] = Field(
        "after",
        description="When a prompt switch re-caches the KV window: after the first changed chunk (default: the "
        "change shows one re-cache sooner; that first chunk sees the window as the old prompt left it), or "
        "before it (LongLive's order). video/longlive/stream.py.",
        json_schema_extra=_ui(21, load=False, component="select"),
    )
    recache_mode: Literal["stock", "causal"] = Field(
        "stock",
        description="How a prompt switch re-caches the window. stock = LongLive v1.0's (one unmasked pass over "
        "the window; a switch in the first 12 latent frames rewrites the sink too), what the released weights "
        "were tuned with. causal = one block-causal pass per window chunk, sink never rewritten.",
        json_schema_extra=_ui(22, load=False, component="select"),
    )
    preempt: bool = Field(
        True,
        description="A directive that arrives while a chunk is being denoised restarts that chunk under the new "
        "prompt (when it is early enough to still meet real time) instead of waiting for the next one.",
        json_schema_extra=_ui(23, load=False),
    )
    fill_batches: bool = Field(
        False,
        description="Several sessions on one engine: begin a streaming session's next chunk as soon as another "
        "session has passes to run, so it rides in that batch. More sessions keep real time; the price is "
        "latency: a directive that comes after such a chunk was made shows one chunk later. Measured both "
        "ways in docs/longlive.md.",
        json_schema_extra=_ui(24, load=False),
    )
    attention: SparseAttentionConfig = Field(
        default_factory=SparseAttentionConfig,
        description="Block-sparse self-attention (off by default: not a net speed-up on H100); see docs/attention.md.",
        json_schema_extra=_ui(25, load=False),
    )

    _on_off_compile = field_validator("compile", mode="before")(_on_off)

    @field_validator("warmup_size")
    @classmethod
    def _size_or_empty(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not re.fullmatch(r"\d+x\d+", value):
            raise ValueError(f"warmup_size must be HxW (e.g. 480x832) or empty, got {value!r}")
        return value

    @model_validator(mode="after")
    def _window_holds_sink(self) -> LongLiveSettings:
        if self.sink_size >= self.local_attn_size:
            raise ValueError(
                f"sink_size ({self.sink_size}) must be smaller than local_attn_size ({self.local_attn_size})"
            )
        return self

    def wan_config(self, detected: WanConfig | None = None) -> WanConfig:
        """The architecture with this session's window: the named preset, or for "auto" the
        preset detected from the checkpoint (`detected`; without it, the released model's)."""
        if self.preset == "auto":
            base = detected or WanConfig.from_name("wan2.1-t2v-1.3b")
        else:
            base = WanConfig.from_name(self.preset)
        return base.replace(local_attn_size=self.local_attn_size, sink_size=self.sink_size)

    def resolved(self, device: str = "cpu", capability: tuple[int, int] | None = None) -> ResolvedSpeed:
        """What "auto" means on this device (`capability`: the CUDA card's, (9, 0) for Hopper)."""
        cuda = str(device).startswith("cuda")
        compile_on = self.compile == "on" or (self.compile == "auto" and cuda)
        if self.linear_precision == "auto":
            fp8 = cuda and capability is not None and capability >= (9, 0)
        else:
            fp8 = self.linear_precision == "fp8"
        warmup = tuple(int(v) for v in self.warmup_size.split("x")) if self.warmup_size else None
        if self.attention_kernel == "auto":
            from ..attention.flash import flash_by_default

            flash = cuda and flash_by_default(capability)
        else:
            flash = self.attention_kernel == "flash"
        return ResolvedSpeed(compile=compile_on, fp8=fp8, cuda_graphs=self.cuda_graphs and cuda,
                             compile_mode=None if self.compile_mode == "default" else "max-autotune-no-cudagraphs",
                             warmup_hw=warmup if compile_on and cuda else None,
                             warmup_batches=tuple(sorted({1, self.max_sessions})),
                             flash_attention=flash, flash_required=self.attention_kernel == "flash")


@dataclass(frozen=True)
class ResolvedSpeed:
    """The speed settings a load actually uses (after "auto")."""

    compile: bool
    fp8: bool
    cuda_graphs: bool
    compile_mode: str | None
    warmup_hw: tuple[int, int] | None
    warmup_batches: tuple[int, ...] = (1,)  # EngineHost.warm_up's: its largest batch runs every smaller one
    flash_attention: bool = False  # FlashAttention-4 for long-key attention (video/attention/flash.py)
    flash_required: bool = False  # the settings asked for it: a load where it cannot run fails
