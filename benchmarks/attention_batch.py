"""Several sessions' self-attention: one call per session vs one batched call, at LongLive's shapes.

    python3 benchmarks/attention_batch.py                       # GPU: bf16, cuDNN and FlashAttention-4 (~30 s)
    python3 benchmarks/attention_batch.py --smoke --out /tmp/x  # CPU, tiny shapes (a test runs it)

What `EngineRuntime` does for rows reading the same keys (`runtime._shared_read`): the keys are
read through the KV store's strides, (rows, heads, tokens, head_dim) of a
(layers, rows, heads, window, head_dim) buffer, as the engine reads them. Per shape, kernel and
session count: the p50/p95 of all sessions' attention for one layer, called session by session
and in one call, the saving per chunk (30 layers x 5 passes), and whether every session's output
is bit-identical both ways.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kv_write import ms_stats, time_ms  # noqa: E402

from record import ensure_package, kernel_device, result_path, write_result  # noqa: E402

#: (queries of a chunk, keys of a full window) and the session counts the capacity goals name.
SHAPES = {"480x832": ((4680, 18720), (1, 2, 3, 4)), "320x576": ((2160, 8640), (1, 2, 4, 6, 8))}
CALLS_PER_CHUNK = 30 * 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes")
    parser.add_argument("--out", type=Path, default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args(argv)

    import torch

    ensure_package()
    from comfyui_persona.video.attention import dense_attention
    from comfyui_persona.video.attention.flash import flash_attention, flash_card_reasons, flash_missing

    device, card, short = kernel_device(torch, args.smoke)
    heads, head_dim = 12, 128
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = {"tiny": ((24, 96), (1, 3))} if args.smoke else SHAPES
    reps = 3 if args.smoke else args.reps
    kernels = {"sdpa_cudnn_first": dense_attention}
    capability = torch.cuda.get_device_capability() if device.type == "cuda" else None
    if flash_missing() is None and not flash_card_reasons(capability):
        kernels["flash_attn_4"] = flash_attention
    gen = torch.Generator(device=device).manual_seed(0)
    metrics: dict = {}
    for name, ((n_q, n_k), counts) in shapes.items():
        rows_max = max(counts)
        q_all = torch.randn(rows_max, heads, n_q, head_dim, device=device, dtype=dtype, generator=gen)
        # One layer of a KV store with a little room past the keys read, as a window being filled has.
        store = torch.randn(2, rows_max, heads, n_k + 64, head_dim, device=device, dtype=dtype, generator=gen)
        for kernel_name, kernel in kernels.items():
            for rows in counts:
                q, k, v = q_all[:rows], store[0, :rows, :, :n_k], store[1, :rows, :, :n_k]

                def apart(q=q, k=k, v=v, rows=rows, kernel=kernel):
                    return [kernel(q[r : r + 1], k[r : r + 1], v[r : r + 1]) for r in range(rows)]

                def together(q=q, k=k, v=v, kernel=kernel):
                    return kernel(q, k, v)

                batched = together()
                same = all(a.equal(batched[r : r + 1]) for r, a in enumerate(apart()))
                row: dict = {"shape": name, "queries": n_q, "keys": n_k, "kernel": kernel_name,
                             "sessions": rows, "bit_identical": same}
                for label, fn in (("apart", apart), ("together", together)):
                    row[label] = ms_stats(time_ms(torch, fn, reps))
                saved = row["apart"]["ms_p50"] - row["together"]["ms_p50"]
                row["saved_ms_per_chunk_round_p50"] = round(saved * CALLS_PER_CHUNK, 2)
                row["together_vs_apart"] = round(row["together"]["ms_p50"] / row["apart"]["ms_p50"], 4)
                metrics[f"{name}/{kernel_name}/{rows}"] = row
                print(row, flush=True)
    out = result_path("attention-batch", short, folder=args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, "attention-batch", card, config={
        "heads": heads, "head_dim": head_dim, "dtype": str(dtype).removeprefix("torch."), "reps": reps,
        "smoke": args.smoke, "calls_per_chunk": CALLS_PER_CHUNK,
        "keys": "strided views of one (2, rows, heads, keys + 64, head_dim) buffer, as the KV store holds them",
        "timing": "CUDA events around all sessions' calls of one layer (CPU: perf_counter)"}, metrics=metrics)
    print(f"wrote {out}")
    return 0 if all(row["bit_identical"] for row in metrics.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
