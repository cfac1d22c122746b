"""User settings of sparse attention: a pydantic model that validates and drives the UI.

LongLive's settings embed it as `attention: SparseAttentionConfig`. The field names follow the
issue (`sparge_*`, after SpargeAttn). `sparge_dense_layers` can only be checked against the
model's layer count, which this model does not know: `SparseRouter` checks it when it is built
and raises `SparseConfigError` naming the bad index. `default_dense_layers` lives here too, so
the router depends on its settings and not the other way round.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...errors import PersonaError
from .sparse import BlockSparseParams


class SparseConfigError(PersonaError, ValueError):
    """Settings that cannot apply to this model (e.g. a dense layer index past the last layer)."""

    code = "sparse_config"


def default_dense_layers(num_layers: int) -> frozenset[int]:
    """The layers that stay dense unless configured: the first 2 and the last 2."""
    return frozenset(i for i in (0, 1, num_layers - 2, num_layers - 1) if 0 <= i < num_layers)


def _ui(order: int, **extra: Any) -> dict[str, Any]:
    # Attention settings change per chunk without reloading weights.
    return {"ui": {"order": order, "is_load_param": False, **extra}}


class SparseAttentionConfig(BaseModel):
    """Block-sparse self-attention (SpargeAttn's method) for the LongLive engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparge_attention: bool = Field(
        False,
        description="Use block-sparse self-attention where the rules below allow; off means dense everywhere.",
        json_schema_extra=_ui(0),
    )
    sparge_topk: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Fraction of key blocks each query block keeps, by pooled score (1 = all: dense result).",
        json_schema_extra=_ui(1, step=0.05),
    )
    sparge_cdf_threshold: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="If set, keep the fewest key blocks whose pooled probability reaches this instead of top-k.",
        json_schema_extra=_ui(2, step=0.01),
    )
    sparge_timestep_threshold: float = Field(
        800.0,
        ge=0.0,
        le=1000.0,
        description=(
            "Sparse only on steps with t below this. LongLive's warped steps are 1000, 937.5, 833.3, 625: "
            "at 800 only the last step is sparse (see docs/attention.md)."
        ),
        json_schema_extra=_ui(3, step=1),
    )
    sparge_dense_layers: tuple[int, ...] | None = Field(
        None,
        description="Layer indices that always stay dense; default: the first 2 and the last 2.",
        json_schema_extra=_ui(4),
    )
    sparge_sim_threshold: float | None = Field(
        None,
        ge=-1.0,
        le=1.0,
        description=(
            "Blocks whose tokens' mean cosine similarity is at or below this are always computed; "
            "default -0.1 with top-k (never), 0.6 with the cdf rule (SpargeAttn's defaults)."
        ),
        json_schema_extra=_ui(5, step=0.05),
    )
    sparge_block_q: Literal[64, 128] = Field(
        128, description="Queries per block.", json_schema_extra=_ui(6, component="select")
    )
    sparge_block_k: Literal[64, 128] = Field(
        128, description="Keys per block.", json_schema_extra=_ui(7, component="select")
    )
    sparge_keep_own_chunk: bool = Field(
        True,
        description="Always attend to the whole chunk being denoised (its keys), not only the diagonal.",
        json_schema_extra=_ui(8),
    )
    sparge_kernel: Literal["flex", "spargeattn"] = Field(
        "flex",
        description=(
            "flex: PyTorch FlexAttention (any CUDA card). spargeattn: SpargeAttn's own kernels when "
            "installed (keeps only the first key block as sink, not the own chunk)."
        ),
        json_schema_extra=_ui(9, component="select"),
    )

    @field_validator("sparge_dense_layers")
    @classmethod
    def _layers_are_distinct_and_non_negative(cls, layers: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if layers is None:
            return None
        negative = [i for i in layers if i < 0]
        if negative:
            raise ValueError(f"layer indices must be >= 0, got {negative}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layer indices repeat: {list(layers)}")
        return tuple(sorted(layers))

    @model_validator(mode="after")
    def _blocks_divide(self) -> SparseAttentionConfig:
        if self.sparge_block_q % self.sparge_block_k and self.sparge_block_k % self.sparge_block_q:
            raise ValueError("sparge_block_q and sparge_block_k must divide one another")
        return self

    def dense_layers(self, num_layers: int) -> frozenset[int]:
        """The always-dense layers for a model of `num_layers`; raises on an index that does not exist."""
        if self.sparge_dense_layers is None:
            return default_dense_layers(num_layers)
        bad = [i for i in self.sparge_dense_layers if i >= num_layers]
        if bad:
            raise SparseConfigError(
                f"sparge_dense_layers {bad} do not exist: the model has {num_layers} layers (0..{num_layers - 1})"
            )
        return frozenset(self.sparge_dense_layers)

    def block_params(self, sink_tokens: int = 0) -> BlockSparseParams:
        """The per-call parameters; `sink_tokens` comes from the engine (sink frames x tokens per frame)."""
        return BlockSparseParams(
            topk=None if self.sparge_cdf_threshold is not None else self.sparge_topk,
            cdf_threshold=self.sparge_cdf_threshold,
            sim_threshold=self.sparge_sim_threshold,
            block_q=self.sparge_block_q,
            block_k=self.sparge_block_k,
            sink_tokens=sink_tokens,
            keep_own_chunk=self.sparge_keep_own_chunk,
        )
