"""Start-up self-check: each backend must reproduce dense attention on a small random case.

A kernel that imports but computes garbage (wrong build for the card, a broken Triton, an
unexpected layout) would otherwise silently spoil every frame. The first time a backend is
used on a device and dtype it runs one small case against float32 SDPA; a backend that fails
is disabled for the process with one log line, and the router falls back to dense.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: (backend name, device, dtype) -> None when passed, else why it failed
_RESULTS: dict[tuple[str, str, torch.dtype], str | None] = {}

#: Minimum cosine similarity and maximum relative L1 error against dense, per backend.
#: Quantised kernels (INT8 / FP8 / FP4) are allowed their documented error.
TOLERANCES: dict[str, tuple[float, float]] = {
    "sdpa": (0.999, 0.02),
    "sparse": (0.999, 0.02),
    "sage": (0.99, 0.1),
    "sparge": (0.99, 0.1),
    "sage3": (0.97, 0.25),
    "flash": (0.999, 0.02),
}


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(cosine similarity, relative L1 error) of `out` against `ref`, over all elements."""
    o, r = out.float().flatten(), ref.float().flatten()
    cos = F.cosine_similarity(o, r, dim=0).item()
    rel_l1 = ((o - r).abs().sum() / r.abs().sum().clamp_min(1e-30)).item()
    return cos, rel_l1


def self_check(
    name: str,
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> str | None:
    """None if `fn` passes on (device, dtype) (cached per process), else the failure, logged once.

    The case has lengths that are not multiples of the block sizes (250 queries, 330 keys),
    so edge tiles are exercised, head_dim 128 (LongLive's), and the layout the engine passes:
    two sessions in one call, keys and values a prefix of a longer (rows, heads, tokens,
    head_dim) buffer (a strided view, as the KV store's window is read).
    """
    key = (name, str(device), dtype)
    if key in _RESULTS:
        return _RESULTS[key]
    gen = torch.Generator(device="cpu").manual_seed(1234)
    q = torch.randn(2, 2, 250, 128, generator=gen)
    store = torch.randn(2, 2, 2, 340, 128, generator=gen)  # (k/v, rows, heads, window, head_dim)
    ref = F.scaled_dot_product_attention(q, store[0, :, :, :330], store[1, :, :, :330])
    failure: str | None
    try:
        store = store.to(device=device, dtype=dtype)
        out = fn(q.to(device=device, dtype=dtype), store[0, :, :, :330], store[1, :, :, :330])
        if out.shape != ref.shape:
            failure = f"output shape {tuple(out.shape)} != {tuple(ref.shape)}"
        else:
            cos, rel_l1 = compare(out.to("cpu"), ref)
            min_cos, max_l1 = TOLERANCES.get(name, (0.99, 0.1))
            ok = cos >= min_cos and rel_l1 <= max_l1
            failure = None if ok else f"cosine {cos:.4f} (min {min_cos}), rel L1 {rel_l1:.4f} (max {max_l1})"
    except Exception as exc:  # any failure of a third-party kernel disables it, never the engine
        failure = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if failure is not None:
        log.warning(
            "attention backend %r disabled on %s/%s: self-check failed: %s", name, device, dtype, failure
        )
    _RESULTS[key] = failure
    return failure


def reset() -> None:
    """Forget earlier results (tests; or after installing a kernel package at run time)."""
    _RESULTS.clear()
