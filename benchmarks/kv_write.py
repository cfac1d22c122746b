"""The KV window's writes: `index_copy_` element by element vs `runtime.copy_tokens` (8-byte words).

    python3 benchmarks/kv_write.py                       # GPU: LongLive's shapes, bf16 (~10 s)
    python3 benchmarks/kv_write.py --smoke --out /tmp/x  # CPU, tiny shapes (a test runs it)

Shapes: one layer's keys of one chunk (3 latent frames) written into a session's window of 12
latent frames, 12 heads x 128: 480x832 -> 4,680 of 18,720 tokens; 320x576 -> 2,160 of 8,640.
A pass makes two such writes per layer (keys, values), 30 layers, 5 passes a chunk: the
per-chunk figure is the per-write median times 300. Both variants write the same bytes (checked).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import ensure_package, kernel_device, result_path, write_result  # noqa: E402

SHAPES = {"480x832": (4680, 18720), "320x576": (2160, 8640)}
WRITES_PER_CHUNK = 2 * 30 * 5


def time_ms(torch, fn, reps: int) -> list[float]:
    cuda = torch.cuda.is_available()
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            import time

            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return times


def ms_stats(times: list[float], per_chunk: int | None = None) -> dict:
    """p50 and p95 of `times` (ms), and with `per_chunk` the p50 times that many calls a chunk."""
    times = sorted(times)
    p50 = statistics.median(times)
    out = {"ms_p50": round(p50, 4), "ms_p95": round(times[int(0.95 * (len(times) - 1))], 4)}
    if per_chunk is not None:
        out["ms_per_chunk_p50"] = round(p50 * per_chunk, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes")
    parser.add_argument("--out", type=Path, default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)

    import torch

    ensure_package()
    from comfyui_persona.video.longlive.runtime import copy_tokens

    device, card, short = kernel_device(torch, args.smoke)
    heads, head_dim, dtype = 12, 128, torch.bfloat16
    shapes = {"tiny": (24, 96)} if args.smoke else SHAPES
    reps = 5 if args.smoke else args.reps
    metrics: dict = {}
    for name, (new_tokens, window) in shapes.items():
        cache = torch.randn(heads, window, head_dim, device=device).to(dtype)
        # Keys as the model hands them over: one third of a fused q/k/v projection (strided).
        fused = torch.randn(heads, new_tokens, 3 * head_dim, device=device).to(dtype)
        new = fused[..., head_dim : 2 * head_dim]
        index = torch.arange(window - new_tokens, window, device=device)
        reference, words = cache.clone(), cache.clone()
        reference.index_copy_(1, index, new)
        copy_tokens(words, index, new)
        same = bool(torch.equal(reference, words))
        elements = time_ms(torch, lambda c=cache, i=index, n=new: c.index_copy_(1, i, n), reps)
        word_times = time_ms(torch, lambda c=cache, i=index, n=new: copy_tokens(c, i, n), reps)
        row = {"new_tokens": new_tokens, "window_tokens": window, "same_bytes": same}
        for label, times in (("index_copy_elements", elements), ("copy_tokens_words", word_times)):
            row[label] = ms_stats(times, WRITES_PER_CHUNK)
        metrics[name] = row
        print(name, row, flush=True)
    out = result_path("kv-write", short, folder=args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, "kv-write", card, config={"heads": heads, "head_dim": head_dim, "dtype": "bfloat16",
                                                 "reps": reps, "smoke": args.smoke,
                                                 "writes_per_chunk": WRITES_PER_CHUNK}, metrics=metrics)
    print(f"wrote {out}")
    return 0 if all(row["same_bytes"] for row in metrics.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
