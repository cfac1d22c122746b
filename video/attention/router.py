"""Per layer and step routing between dense and block-sparse self-attention.

The rule (SpargeAttn's hybrid use in video models, and the issue): dense on the always-dense
layers (first 2 and last 2 by default), dense on early steps (t >= threshold, where the
sample is mostly noise and the attention pattern is not yet settled), dense on the clean
KV-refresh pass (it writes the cache every later chunk reads), block-sparse elsewhere.
Both functions are built once in the constructor; `select` only picks one, so the hot loop
pays a couple of comparisons per layer and step.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter

import torch

from .config import SparseAttentionConfig, default_dense_layers
from .dense import dense_attention
from .dispatch import AttentionBackend, AttentionFn, BackendUnavailableError, check_backend
from .sparse import BlockSparseParams, block_sparse_attention

log = logging.getLogger(__name__)


class SparseRouter:
    """`AttentionRouter` that sends eligible (layer, step) pairs to block-sparse attention.

    `sink_tokens` is the engine's sink length in tokens (sink frames x tokens per frame); the
    sink must be the first keys. The queries' own keys are the last q_len keys unless the
    engine says otherwise with `set_query_position` once per chunk (LongLive's ring cache
    stores the current chunk in whichever slot is oldest, not always last).
    `stats` counts how often each path was chosen, so a run can report what sparse reached.
    """

    def __init__(self, config: SparseAttentionConfig, num_layers: int, sink_tokens: int = 0):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.enabled = config.sparge_attention
        self.timestep_threshold = config.sparge_timestep_threshold
        self.kernel = config.sparge_kernel
        self.dense_layers = config.dense_layers(num_layers)  # raises SparseConfigError
        self.params: BlockSparseParams = config.block_params(sink_tokens)
        self._build()

    @classmethod
    def from_params(
        cls,
        params: BlockSparseParams,
        num_layers: int,
        *,
        dense_layers: frozenset[int] | None = None,
        timestep_threshold: float = 800.0,
        kernel: str = "flex",
    ) -> SparseRouter:
        """Without the pydantic settings (benchmarks on a machine with torch alone); sparse on."""
        router = cls.__new__(cls)
        router.num_layers = num_layers
        router.enabled = True
        router.timestep_threshold = timestep_threshold
        router.kernel = kernel
        router.dense_layers = default_dense_layers(num_layers) if dense_layers is None else frozenset(dense_layers)
        router.params = params
        router._build()
        return router

    def _build(self) -> None:
        self.dense: AttentionFn = dense_attention
        self.sparse: AttentionFn = self._sparse_fn()
        self.stats: Counter[str] = Counter()
        self.own_start: int | None = None

    def set_query_position(self, own_start: int | None) -> None:
        """Index of the current chunk's first key in the keys the engine passes (None: last q_len)."""
        if own_start is not None and own_start < 0:
            raise ValueError(f"own_start must be >= 0, got {own_start}")
        self.own_start = own_start

    def _run_flex(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return block_sparse_attention(q, k, v, self.params, own_start=self.own_start)

    def _sparse_fn(self) -> AttentionFn:
        if self.kernel == "spargeattn":
            from .spargeattn import sparge_attention

            kernel = functools.partial(sparge_attention, params=self.params)
            return _checked_once(AttentionBackend.SPARGE, kernel, fallback=self._flex())
        return self._flex()

    def _flex(self) -> AttentionFn:
        return _checked_once(AttentionBackend.SPARSE, self._run_flex, fallback=dense_attention)

    def is_sparse(self, layer: int, timestep: float, refresh: bool) -> bool:
        """The routing rule alone, without counting (docs and tests)."""
        return (
            self.enabled
            and not refresh
            and layer not in self.dense_layers
            and timestep < self.timestep_threshold
        )

    def select(self, layer: int, timestep: float, refresh: bool) -> AttentionFn:
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} outside 0..{self.num_layers - 1}")
        if self.is_sparse(layer, float(timestep), refresh):
            self.stats["sparse"] += 1
            return self.sparse
        self.stats["dense"] += 1
        return self.dense


def _checked_once(backend: AttentionBackend, kernel: AttentionFn, fallback: AttentionFn) -> AttentionFn:
    """`kernel`, after its constraints and self-check pass for the first call's device and dtype.

    A failing check logs one line and that (device, dtype, head_dim) uses `fallback` from then on.
    """
    decided: dict[tuple[str, int | None, torch.dtype, int], AttentionFn] = {}

    @torch.compiler.disable
    def decide(key, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> AttentionFn:
        # Kept out of any compiled graph: the self-check runs real kernels, once per key.
        try:
            check_backend(backend, q, k, v)
            fn = kernel
        except BackendUnavailableError as exc:
            log.warning("%s; using %s instead", exc, getattr(fallback, "__name__", "the fallback"))
            fn = fallback
        decided[key] = fn
        return fn

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # After the first call a plain dict hit, which torch.compile traces without a break.
        key = (q.device.type, q.device.index, q.dtype, q.shape[-1])
        fn = decided.get(key)
        if fn is None:
            fn = decide(key, q, k, v)
        return fn(q, k, v)

    run.__name__ = f"{backend.value}_checked"
    return run


def make_router(
    settings: SparseAttentionConfig | dict | None, *, num_layers: int, sink_tokens: int = 0
) -> SparseRouter:
    """The router for LongLive: validates `settings` (a dict from JSON is fine) and builds it."""
    if not isinstance(settings, SparseAttentionConfig):
        settings = SparseAttentionConfig.model_validate(settings or {})
    return SparseRouter(settings, num_layers=num_layers, sink_tokens=sink_tokens)
