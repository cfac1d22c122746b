"""The single dispatch point for attention.

Tensors are (batch, heads, tokens, head_dim), the layout SDPA and FlexAttention take.
The model asks a router once per layer and denoising step which function to use
(`AttentionRouter.select`), never per token, so routing costs nothing in the hot loop.

Backends (`AttentionBackend`): dense SDPA (always there; cuDNN, then FlashAttention on CUDA),
block-sparse on FlexAttention (`sparse.py`, SpargeAttn's selection), and three optional
third-party kernels used only when installed and the card fits: SageAttention (`sage`),
SpargeAttn's own kernels (`sparge`), SageAttention3 FP4 (`sage3`, Blackwell only) and
FlashAttention-4 (`flash`, Hopper; the engine's dense kernel for long keys there, `flash.py`).
Each optional backend explains a mismatch (device, dtype, head_dim, card) with
`BackendUnavailableError` and must pass a self-check against dense on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Protocol

import torch

from ...errors import PersonaError
from . import flash, sage, spargeattn
from .dense import dense_attention
from .selfcheck import self_check
from .sparse import BlockSparseParams, block_sparse_attention

#: (q, k, v) -> out, all (batch, heads, tokens, head_dim)
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class AttentionBackend(str, Enum):
    """Where attention runs. Only `sdpa` is always available; `sparse` needs FlexAttention."""

    SDPA = "sdpa"
    SPARSE = "sparse"
    SAGE = "sage"
    SPARGE = "sparge"
    SAGE3 = "sage3"
    FLASH = "flash"


class BackendUnavailableError(PersonaError, RuntimeError):
    """A backend cannot run this call; the message names the backend and every reason."""

    def __init__(self, backend: AttentionBackend, reasons: list[str]):
        self.backend = backend
        self.reasons = reasons
        super().__init__(f"attention backend {backend.value!r} cannot run: " + "; ".join(reasons))


def _sparse_missing() -> str | None:
    try:
        from torch.nn.attention.flex_attention import BlockMask

        BlockMask.from_kv_blocks  # noqa: B018 - present since torch 2.5
    except (ImportError, AttributeError):
        return f"FlexAttention block masks need torch>=2.5, this is {torch.__version__}"
    return None


def _sparse_constraints(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    reasons = []
    if q.shape[-1] < 16:
        reasons.append(f"FlexAttention needs head_dim >= 16, got {q.shape[-1]}")
    if q.is_cuda and q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        reasons.append(f"needs float16, bfloat16 or float32 on CUDA, got {q.dtype}")
    return reasons


#: backend -> (why it is missing entirely or None, per-call constraint reasons)
_CHECKS: dict[AttentionBackend, tuple[Callable[[], str | None], Callable[..., list[str]]]] = {
    AttentionBackend.SPARSE: (_sparse_missing, _sparse_constraints),
    AttentionBackend.SAGE: (sage.sage_missing, sage.sage_constraints),
    AttentionBackend.SPARGE: (spargeattn.sparge_missing, spargeattn.sparge_constraints),
    AttentionBackend.SAGE3: (sage.sage3_missing, sage.sage3_constraints),
    AttentionBackend.FLASH: (flash.flash_missing, flash.flash_constraints),
}


def _common_shape_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    reasons = []
    if not (q.dim() == k.dim() == v.dim() == 4):
        reasons.append(
            f"needs 4-D (batch, heads, tokens, head_dim) tensors, got {q.dim()}/{k.dim()}/{v.dim()}-D"
        )
    elif q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or q.shape[:2] != k.shape[:2]:
        reasons.append(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit together")
    return reasons


def explain(backend: AttentionBackend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    """Every reason `backend` cannot run these tensors (empty: it can). No kernel runs."""
    reasons = _common_shape_reasons(q, k, v)
    if backend is AttentionBackend.SDPA:
        return reasons
    missing, constraints = _CHECKS[backend]
    why = missing()
    if why:
        return [*reasons, why]
    return reasons + constraints(q, k, v)


def _kernel(backend: AttentionBackend, params: BlockSparseParams | None) -> AttentionFn:
    if backend is AttentionBackend.SDPA:
        return dense_attention
    if backend is AttentionBackend.SPARSE:
        return functools.partial(block_sparse_attention, params=params or BlockSparseParams())
    if backend is AttentionBackend.SAGE:
        return sage.sage_attention
    if backend is AttentionBackend.SPARGE:
        return functools.partial(spargeattn.sparge_attention, params=params or BlockSparseParams())
    if backend is AttentionBackend.SAGE3:
        return sage.sage3_attention
    if backend is AttentionBackend.FLASH:
        return flash.flash_attention
    raise ValueError(f"unknown attention backend {backend!r}")


def _self_check_kernel(backend: AttentionBackend) -> AttentionFn:
    """What the self-check runs: sparse backends with every block kept must equal dense."""
    if backend in (AttentionBackend.SPARSE, AttentionBackend.SPARGE):
        return _kernel(backend, BlockSparseParams(topk=1.0))
    return _kernel(backend, None)


def check_backend(backend: AttentionBackend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise `BackendUnavailableError` unless `backend` fits these tensors and passed its self-check."""
    reasons = explain(backend, q, k, v)
    if reasons:
        raise BackendUnavailableError(backend, reasons)
    if backend is not AttentionBackend.SDPA:
        failure = self_check(backend.value, _self_check_kernel(backend), q.device, q.dtype)
        if failure:
            raise BackendUnavailableError(backend, [f"failed its start-up self-check ({failure})"])


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: AttentionBackend | str = AttentionBackend.SDPA,
    params: BlockSparseParams | None = None,
) -> torch.Tensor:
    """Non-causal attention of q over k/v on `backend`; the caller decides which keys to pass.

    `params` configures the block-sparse backends (`sparse`, `sparge`). A backend that cannot
    run the call raises `BackendUnavailableError` naming every reason; nothing falls back
    silently here (routers decide fallbacks once, with a log line).
    """
    backend = AttentionBackend(backend)
    if backend is not AttentionBackend.SDPA:
        check_backend(backend, q, k, v)
    return _kernel(backend, params)(q, k, v)


class AttentionRouter(Protocol):
    """Chooses the attention function for one layer at one denoising step."""

    def set_query_position(self, own_start: int | None) -> None:
        """Row of the current pass's first own key among the keys it reads (the ring cache
        does not always keep them last); called before each session's attention."""
        ...

    def select(self, layer: int, timestep: float, refresh: bool) -> AttentionFn:
        """`timestep` is the step's t in [0, 1000]; `refresh` marks the clean KV-refresh pass."""
        ...


class DenseRouter:
    """Dense SDPA everywhere: the default (stateless: one instance serves every session)."""

    def set_query_position(self, own_start: int | None) -> None:
        """Dense attention reads every key given; where the own keys are does not matter."""

    def select(self, layer: int, timestep: float, refresh: bool) -> AttentionFn:
        return dense_attention
