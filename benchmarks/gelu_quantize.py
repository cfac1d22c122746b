"""The FP8 FFN's fused bias + GELU + quantisation kernel: a row as one padded block vs
power-of-two pieces (`fp8_gelu.row_pieces`), and its warp count, side by side.

    python3 benchmarks/gelu_quantize.py    # CUDA GPU with Triton (~10 s)

Shapes: the FFN's hidden width (8,960) for one 480x832 chunk's 4,680 tokens, three sessions'
14,040 and one 320x576 chunk's 2,160. A pass runs the kernel once per layer: 30 layers, 5
passes a chunk, so the per-chunk figure is the per-call median times 150. Every variant must
write the same e4m3 codes and scales as the engine's layout (checked; exit 1 if not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kv_write import ms_stats, time_ms  # noqa: E402

from record import ensure_package, kernel_device, result_path, write_result  # noqa: E402

TOKENS = {"480x832": 4680, "480x832-3-sessions": 14040, "320x576": 2160}
HIDDEN = 8960
CALLS_PER_CHUNK = 30 * 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)

    import torch

    ensure_package()
    from comfyui_persona.video.longlive import fp8_gelu

    if fp8_gelu._KERNEL is None or not torch.cuda.is_available():
        print("needs a CUDA GPU and Triton", file=sys.stderr)
        return 2
    device, card, short = kernel_device(torch, False)
    padded = 1 << (HIDDEN - 1).bit_length()
    variants = {
        "one padded block, 16 warps (before)": ((padded, 0, 0), 16),
        **{f"pieces {fp8_gelu.row_pieces(HIDDEN)}, {w} warps": (fp8_gelu.row_pieces(HIDDEN), w) for w in (4, 8, 16)},
    }
    engine = f"pieces {fp8_gelu.row_pieces(HIDDEN)}, {fp8_gelu._warps(HIDDEN)} warps"
    metrics: dict = {"engine_variant": engine}
    ok = True
    for name, tokens in TOKENS.items():
        gen = torch.Generator(device=device).manual_seed(0)
        h = (torch.randn(tokens, HIDDEN, generator=gen, device=device) * 2).to(torch.bfloat16)
        bias = (torch.randn(HIDDEN, generator=gen, device=device) * 0.5).to(torch.bfloat16)
        want = fp8_gelu.launch(h, bias, *variants[engine])
        row: dict = {"tokens": tokens, "hidden": HIDDEN}
        for label, (pieces, warps) in variants.items():
            q, scale = fp8_gelu.launch(h, bias, pieces, warps)
            same = bool(torch.equal(q.view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(scale, want[1]))
            ok &= same
            times = time_ms(torch, lambda h=h, b=bias, p=pieces, w=warps: fp8_gelu.launch(h, b, p, w), args.reps)
            moved = h.numel() * 2 + h.numel() + tokens * 4  # bf16 in, e4m3 out, scales
            row[label] = {"same_output": same, **ms_stats(times, CALLS_PER_CHUNK),
                          "tb_per_s_p50": round(moved / statistics.median(times) / 1e9, 2)}
        metrics[name] = row
        print(name, row, flush=True)
    out = result_path("gelu-quantize", short, folder=args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, "gelu-quantize", card, config={"hidden": HIDDEN, "dtype": "bfloat16", "reps": args.reps,
                                                      "calls_per_chunk": CALLS_PER_CHUNK}, metrics=metrics)
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
