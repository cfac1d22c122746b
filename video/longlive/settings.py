"""What a user may set on the LongLive engine: one pydantic model drives validation and UI.

Every field has bounds, a description and `json_schema_extra={"ui": {"order", "is_load_param"}}`
(STYLE.md house rule 12); load-time fields rebuild the engine, the others apply live.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..attention.config import SparseAttentionConfig
from .config import WanConfig


def _ui(order: int, *, load: bool, **extra: Any) -> dict[str, Any]:
    return {"ui": {"order": order, "is_load_param": load, **extra}}


class LongLiveSettings(BaseModel):
    """What a user may set on the LongLive engine. Load-time fields rebuild the engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["auto", "wan2.1-t2v-1.3b", "tiny", "tiny-engine"] = Field(
        "auto",
        description="Architecture preset; auto = the one whose shapes the checkpoint has (a name must match it).",
        json_schema_extra=_ui(0, load=True, component="select"),
    )
    denoising_steps: int = Field(
        4, ge=1, le=4,
        description="Denoising steps per chunk, taken from the start of LongLive's 4-step list.",
        json_schema_extra=_ui(1, load=False),
    )
    local_attn_size: int = Field(
        12, ge=6, le=30, multiple_of=3,
        description="Latent frames of context a chunk attends to (sink included).",
        json_schema_extra=_ui(2, load=True),
    )
    sink_size: int = Field(
        3, ge=0, le=12, multiple_of=3,
        description="Latent frames at the start kept in the cache forever (identity anchor).",
        json_schema_extra=_ui(3, load=True),
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Compute dtype of the DiT.", json_schema_extra=_ui(4, load=True),
    )
    compile: bool = Field(
        False, description="torch.compile the transformer block and, on a GPU, the TAE decode (30-45 s before "
        "the first chunk, faster after; with linear_precision fp8, what makes 480x832 real time on an H100).",
        json_schema_extra=_ui(5, load=True),
    )
    decoder: Literal["tae", "vae"] = Field(
        "tae", description="Latent decoder: TAEW2.1 (real time) or the full Wan VAE.",
        json_schema_extra=_ui(6, load=True, component="select"),
    )
    attention: SparseAttentionConfig = Field(
        default_factory=SparseAttentionConfig,
        description="Block-sparse self-attention (off by default: not a net speed-up on H100); see docs/attention.md.",
        json_schema_extra=_ui(7, load=False),
    )
    linear_precision: Literal["bf16", "fp8"] = Field(
        "bf16",
        description="Block linear layers in the compute dtype, or FP8 e4m3 (Hopper; faster, slightly "
        "different numbers; video/longlive/fp8.py).",
        json_schema_extra=_ui(8, load=True, component="select"),
    )
    prompt_switch_recache: Literal["before", "after"] = Field(
        "after",
        description="When a prompt switch re-caches the KV window: after the first changed chunk, queued behind "
        "its decode (default: the change shows one re-cache sooner, 284 vs 397 ms at 480x832 on an H100, FP8 "
        "and compiled; that "
        "first chunk follows the new prompt less closely), or before it (LongLive's order). "
        "video/longlive/pipeline.py.",
        json_schema_extra=_ui(9, load=False, component="select"),
    )
    cuda_graphs: bool = Field(
        True,
        description="On a GPU, replay each DiT pass as one CUDA graph instead of ~1,100 kernel launches: "
        "the host gets a directive's frames ~50 ms sooner (video/longlive/model.py use_cuda_graphs); "
        "falls back, with a warning, if capture fails.",
        json_schema_extra=_ui(10, load=True),
    )

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
