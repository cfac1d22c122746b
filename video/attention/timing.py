"""End-to-end hook: time one engine chunk under several attention routers, same inputs.

The engine benchmark passes a `run_chunk(router)` callable that generates one chunk from a
fixed state (same seed, same cache) with the given router and returns its output latents.
Routers run interleaved (A B A B ...) so clock and thermal drift hit all of them alike; every
call is bracketed by a device synchronisation. The first router is the reference: the others
report how far their output is from it, so "faster" is always quoted with "how different".
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .selfcheck import compare


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def compare_routers(
    run_chunk: Callable[[Any], torch.Tensor | None],
    routers: Mapping[str, Any],
    *,
    warmup: int = 2,
    repeats: int = 5,
    device: torch.device | str | None = None,
) -> dict[str, dict[str, float]]:
    """Median / min chunk latency (ms) per router, and output error against the first router.

    `run_chunk` must be deterministic given the router (fixed seed and starting cache), or the
    error columns measure noise, not attention.
    """
    if not routers:
        raise ValueError("give at least one router")
    device = torch.device(device) if device is not None else None
    names = list(routers)
    outputs: dict[str, torch.Tensor | None] = {}
    for name in names:  # warm-up (compilation, autotuning, caches), one output kept per router
        for _ in range(warmup):
            outputs[name] = run_chunk(routers[name])
        _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            _sync(device)
            start = time.perf_counter()
            out = run_chunk(routers[name])
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
            outputs[name] = out if outputs.get(name) is None else outputs[name]
    reference = outputs[names[0]]
    results: dict[str, dict[str, float]] = {}
    for name in names:
        row = {
            "chunk_ms_p50": statistics.median(times[name]),
            "chunk_ms_min": min(times[name]),
            "repeats": float(repeats),
        }
        out = outputs[name]
        if reference is not None and out is not None:
            row["cosine_vs_first"], row["rel_l1_vs_first"] = compare(out, reference)
        stats = getattr(routers[name], "stats", None)
        if stats:
            total = sum(stats.values())
            row["sparse_selection_share"] = stats.get("sparse", 0) / total
        results[name] = row
    return results
