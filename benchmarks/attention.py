"""Attention backends at LongLive's shapes: time and error against dense, per sparsity level.

    python3 benchmarks/attention.py --out benchmarks/results          # GPU, full run (~5 min)
    python3 benchmarks/attention.py --smoke --out /tmp/x              # CPU, seconds (a test runs it)

Needs torch (and pydantic for the block-sparse router's settings); the package is loaded from
this checkout by path (record.ensure_package), so it runs with the GPU machine's own python3. Shapes: one LongLive chunk of 3 latent frames
attending to the 12-frame window (sink included): 480x832 -> 4,680 queries x 18,720 keys;
320x576 -> 2,160 x 8,640; 12 heads x 128, bf16, batch 1.

Q/K are SYNTHETIC but structured, because random Gaussian Q/K give flat attention (every key
block about equally important) and say nothing about real sparsity: a smooth low-rank content
field over the (frame, row, column) token grid, projected per head, plus Wan's 3-axis RoPE
(44/42/42 of the 128 dims) and a per-head sharpness; V is the same field through another
projection plus noise. The JSON records how peaked the result is (`top20_block_mass`: the
share of attention probability in each query's top 20% of key blocks, exact, on sampled
query rows), next to the same figure for plain random data, so readers can judge the proxy.
Real LongLive activations would be better; none exist without the real weights.

Per backend and setting: median time of many runs after warm-up (CUDA events, synchronised),
relative L1 and cosine error against dense SDPA on the same bf16 inputs, the kept density,
and for block-sparse the mask-building time separately. Results are written after every case,
so a run cut short still leaves a valid file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from record import ensure_package, today, write_result

REPO = Path(__file__).resolve().parents[1]
PKG = "comfyui_persona.video"


def load_attention():
    """The repo's video/attention package (the checkout's, installed or not)."""
    ensure_package()
    return importlib.import_module(f"{PKG}.attention")


def load_longlive():
    """The LongLive engine's config, model and sampler modules."""
    ensure_package()
    return tuple(importlib.import_module(f"{PKG}.longlive.{m}") for m in ("config", "model", "sampler"))


# --------------------------------------------------------------------------- inputs


def wan_rope(x: torch.Tensor, grid: tuple[int, int, int], frame_offset: int = 0) -> torch.Tensor:
    """Wan's 3-axis rotary embedding on (B, H, N, D): dims split t/h/w as D-4(D//6), 2(D//6), 2(D//6)."""
    d = x.shape[-1]
    split = (d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6))
    f, h, w = grid
    pos = (
        torch.stack(
            torch.meshgrid(
                torch.arange(f, device=x.device) + frame_offset,
                torch.arange(h, device=x.device),
                torch.arange(w, device=x.device),
                indexing="ij",
            ),
            dim=-1,
        )
        .reshape(-1, 3)
        .float()
    )
    angles = []
    for axis, size in enumerate(split):
        inv = 1.0 / (10000.0 ** (torch.arange(0, size, 2, device=x.device).float() / size))
        angles.append(pos[:, axis, None] * inv[None, :])
    theta = torch.cat(angles, dim=-1)  # (N, D/2)
    xr = x.float().reshape(*x.shape[:-1], d // 2, 2)
    cos, sin = theta.cos(), theta.sin()
    out = torch.stack((xr[..., 0] * cos - xr[..., 1] * sin, xr[..., 0] * sin + xr[..., 1] * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


def structured_qkv(
    heads: int, head_dim: int, grid: tuple[int, int, int], q_frames: int, device, dtype, seed: int = 0
):
    """q over the last `q_frames` frames of the grid, k/v over all of it. See the module docstring."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    f, h, w = grid
    rank = 24
    coords = torch.stack(
        torch.meshgrid(torch.arange(f) / max(f, 1), torch.arange(h) / h, torch.arange(w) / w, indexing="ij"),
        dim=-1,
    ).reshape(-1, 3)
    freqs = torch.randn(rank, 3, generator=gen) * torch.tensor([1.5, 3.0, 3.0])
    phase = torch.rand(rank, generator=gen) * 2 * math.pi
    field = torch.cos(2 * math.pi * coords @ freqs.T + phase)  # (N, rank), smooth in space and time
    field = field + 0.3 * torch.randn(field.shape, generator=gen)
    wq = torch.randn(heads, rank, head_dim, generator=gen) / math.sqrt(rank)
    wk = wq + 0.5 * torch.randn(heads, rank, head_dim, generator=gen) / math.sqrt(rank)
    wv = torch.randn(heads, rank, head_dim, generator=gen) / math.sqrt(rank)
    sharp = torch.empty(heads, 1, 1).uniform_(1.0, 3.0, generator=gen)  # heads differ in focus
    k = torch.einsum("nr,hrd->hnd", field, wk) * sharp
    v = torch.einsum("nr,hrd->hnd", field, wv) + 0.5 * torch.randn(
        heads, field.shape[0], head_dim, generator=gen
    )
    q = torch.einsum("nr,hrd->hnd", field, wq) * sharp
    q_tokens = q_frames * h * w
    q = q[:, -q_tokens:]
    q, k, v = (t[None].to(device=device, dtype=torch.float32) for t in (q, k, v))
    k = wan_rope(k, grid)
    q = wan_rope(q, (q_frames, h, w), frame_offset=f - q_frames)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def random_qkv(heads, head_dim, q_len, k_len, device, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (torch.randn(1, heads, n, head_dim, generator=gen) for n in (q_len, k_len, k_len))
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def top_block_mass(q, k, block_k: int = 128, fraction: float = 0.2, rows: int = 256) -> float:
    """Mean share of exact attention probability in each sampled query's top `fraction` of key blocks."""
    gen = torch.Generator(device="cpu").manual_seed(7)
    idx = torch.randperm(q.shape[-2], generator=gen)[:rows].to(q.device)
    probs = (q[..., idx, :].float() @ k.float().transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
    nk = -(-k.shape[-2] // block_k)
    probs = torch.nn.functional.pad(probs, (0, nk * block_k - k.shape[-2]))
    block = probs.reshape(*probs.shape[:-1], nk, block_k).sum(-1)
    top = block.topk(max(1, round(fraction * nk)), dim=-1).values.sum(-1)
    return float(top.mean())


# --------------------------------------------------------------------------- timing


def flash_kernels() -> dict:
    """FlashAttention-3 (the `fa3-fwd` wheel) and -4 (`flash-attn-4`'s CuTe kernels, whose SM90
    path is FA3's algorithm) where installed, called like SDPA on (batch, heads, tokens, dim).

    Neither is a dependency: they are timed here against cuDNN before the engine adopts one.
    A kernel that will not import is named in the result instead.
    """
    found: dict = {}

    def to_flash(x):  # FlashAttention takes (batch, tokens, heads, dim); a view, no copy
        return x.transpose(1, 2)

    try:
        import fa3_fwd_config

        sys.modules.setdefault("flash_attn_config", fa3_fwd_config)  # the wheel's renamed module
        import fa3_fwd_interface

        def fa3(q, k, v):
            out = fa3_fwd_interface.flash_attn_func(to_flash(q), to_flash(k), to_flash(v))
            return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)

        found["fa3"] = fa3

        def fa3_fp8(q, k, v):  # per-head e4m3 scales from each tensor's amax, quantisation included
            quantized = [fp8_per_head(x) for x in (q, k, v)]
            return fa3_fp8_kernel(*quantized)

        def fa3_fp8_kernel(*quantized):
            (q8, dq), (k8, dk), (v8, dv) = quantized
            out = fa3_fwd_interface.flash_attn_func(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv)
            return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)

        found["fa3_fp8"] = fa3_fp8
        found["fa3_fp8_kernel"] = (
            fa3_fp8_kernel  # takes fp8_per_head's outputs: timed without the quantisation
        )
    except Exception as exc:
        found["fa3"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    flash = importlib.import_module(f"{PKG}.attention.flash")  # the engine's own wrapper
    missing = flash.flash_missing()
    found["fa4"] = missing if missing else flash.flash_attention
    return found


def fp8_per_head(x):
    """(batch, heads, tokens, dim) -> e4m3 in FlashAttention's (batch, tokens, heads, dim) and the
    float32 (batch, heads) descale FlashAttention-3 takes: one scale per head from its amax."""
    amax = x.abs().amax(dim=(2, 3)).float().clamp_min(1e-6)
    scaled = x.float() * (448.0 / amax)[:, :, None, None]
    return scaled.to(torch.float8_e4m3fn).transpose(1, 2).contiguous(), (amax / 448.0).contiguous()


def time_ms(fn, warmup: int, iters: int, device) -> dict[str, float]:
    """Median and min of `iters` timed calls after `warmup` calls (CUDA events, or perf_counter)."""
    for _ in range(warmup):
        fn()
    samples = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return {"time_ms_p50": statistics.median(samples), "time_ms_min": min(samples), "iters": iters}


# --------------------------------------------------------------------------- cases


def card_slug(device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device).lower()
    for slug in ("h200", "h100", "b200", "gb200", "a100", "l40s", "rtx 5090", "rtx 4090"):
        if slug in name:
            return slug.replace(" ", "")
    return name.replace("nvidia", "").strip().split()[0]


def run(args) -> dict:
    attn = load_attention()
    sparse_mod, dense_mod, selfcheck, schedule, dispatch = (
        importlib.import_module(f"{PKG}.attention.{m}")
        for m in ("sparse", "dense", "selfcheck", "schedule", "dispatch")
    )
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    heads, head_dim = (12, 128) if not args.smoke else (2, 32)
    if args.smoke:
        shapes = {"smoke_3x4x6": ((12, 4, 6), 3)}  # 72 queries x 288 keys
        warmup, iters = 1, 2
    else:
        shapes = {"480x832": ((12, 30, 52), 3), "320x576": ((12, 20, 36), 3)}
        warmup, iters = args.warmup, args.iters
    started = time.monotonic()
    if args.commit:
        os.environ["PERSONA_COMMIT"] = args.commit  # record.py stamps it
    record = {
        "benchmark": "attention",
        "device": torch.cuda.get_device_name(device)
        if on_gpu
        else (platform.processor() or platform.machine()),
        "config": {
            "dtype": str(dtype).removeprefix("torch."),
            "heads": heads,
            "head_dim": head_dim,
            "batch": 1,
            "warmup": warmup,
            "iters": iters,
            "data": "structured synthetic Q/K/V (low-rank smooth field + Wan 3-axis RoPE); see docstring",
            "python": platform.python_version(),
            "cudnn": torch.backends.cudnn.version() if on_gpu else None,
            "longlive_warped_timesteps": schedule.warped_timesteps(),
            "sparse_reach_by_threshold": {
                str(t): schedule.sparse_reach(t)["attention_share"] for t in (626, 800, 834, 938, 1000)
            },
            "self_attention_flop_share_480x832": schedule.self_attention_flop_share(),
        },
        "metrics": {},
        "skipped": [],
    }
    slug = card_slug(device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"attention-{slug}-{today()}.json"

    def save():
        written = write_result(
            out_path,
            "attention",
            record["device"],
            record["config"],
            record["metrics"],
            skipped=record["skipped"],
            **({"wall_s": record["wall_s"]} if "wall_s" in record else {}),
        )
        record.update({k: written[k] for k in ("torch", "commit", "dirty", "date")})

    def over_budget() -> bool:
        return time.monotonic() - started > args.budget_s

    compiled = on_gpu  # fused FlexAttention needs torch.compile; CPU smoke runs it unfused

    def run_shape(shape_name, grid, q_frames):
        f, h, w = grid
        q_len, k_len = q_frames * h * w, f * h * w
        sink = q_frames * h * w  # LongLive's sink is one chunk (3 latent frames)
        q, k, v = structured_qkv(heads, head_dim, grid, q_frames, device, dtype)
        rq, rk, _ = random_qkv(heads, head_dim, q_len, k_len, device, dtype)
        rows: dict[str, dict] = {}
        record["metrics"][shape_name] = {
            "queries": q_len,
            "keys": k_len,
            "sink_tokens": sink,
            "top20_block_mass_structured": top_block_mass(q, k),
            "top20_block_mass_random": top_block_mass(rq, rk),
            "cases": rows,
        }
        del rq, rk
        _, sim_q = sparse_mod._pool_and_similarity(q, 128)
        _, sim_k = sparse_mod._pool_and_similarity(k - k.mean(dim=-2, keepdim=True), 128)
        record["metrics"][shape_name]["block_self_similarity_p50"] = {
            "q": float(sim_q.median()),
            "k": float(sim_k.median()),
        }
        reference = dense_mod.dense_attention(q, k, v)
        ref32 = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
        cos, l1 = selfcheck.compare(reference, ref32)
        record["metrics"][shape_name]["dense_bf16_vs_fp32"] = {"cosine": cos, "rel_l1": l1}
        del ref32

        def case(name, fn, *, density=None, extra=None, against=None):
            if over_budget():
                record["skipped"].append(f"{shape_name}/{name}: time budget {args.budget_s}s spent")
                return
            try:
                out = fn()
                c, e = selfcheck.compare(out, reference if against is None else against)
                row = {"cosine": c, "rel_l1": e, **time_ms(fn, warmup, iters, device)}
                if density is not None:
                    row["density"] = density
                row.update(extra or {})
            except Exception as exc:  # record and go on: one broken kernel must not lose the run
                row = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:400]}
                if args.verbose:
                    traceback.print_exc()
            rows[name] = row
            print(f"{shape_name:>12} {name:<34} {json.dumps(row)}", flush=True)
            save()

        # dense baselines
        case("dense_default", lambda: dense_mod.dense_attention(q, k, v))
        if on_gpu:
            for kernel in ("cudnn", "flash", "efficient"):
                case(f"sdpa_{kernel}", lambda kernel=kernel: dense_mod.sdpa_with(kernel)(q, k, v))
            kernels = flash_kernels()
            for name, kernel in kernels.items():
                if isinstance(kernel, str):
                    record["skipped"].append(f"{shape_name}/{name}: {kernel}")
                elif name == "fa3_fp8_kernel":
                    quantized = [fp8_per_head(x) for x in (q, k, v)]
                    case(name, lambda kernel=kernel, quantized=quantized: kernel(*quantized))
                else:
                    case(name, lambda kernel=kernel: kernel(q, k, v))
            # cross-attention: the chunk's queries over the 512 text tokens
            ck, cv = k[:, :, :512].contiguous(), v[:, :, :512].contiguous()
            cross_ref = dense_mod.sdpa_with("cudnn")(q, ck, cv)
            for name, kernel in {"cudnn": dense_mod.sdpa_with("cudnn"), **kernels}.items():
                if not isinstance(kernel, str) and name != "fa3_fp8_kernel":
                    case(f"cross512_{name}", lambda kernel=kernel: kernel(q, ck, cv), against=cross_ref)
        if args.dense_only:
            return
        for backend in ("sage", "sparge", "sage3"):
            why = attn.explain(attn.AttentionBackend(backend), q, k, v)
            if why:
                record["skipped"].append(f"{shape_name}/{backend}: {'; '.join(why)}")
            elif backend != "sparge":
                try:  # constraints and self-check once, then time the bare kernel
                    dispatch.check_backend(attn.AttentionBackend(backend), q, k, v)
                except attn.BackendUnavailableError as exc:
                    record["skipped"].append(f"{shape_name}/{backend}: {exc}")
                    continue
                kernel = dispatch._kernel(attn.AttentionBackend(backend), None)
                case(backend, lambda kernel=kernel: kernel(q, k, v))

        # block-sparse settings
        blocks = {} if not args.smoke else {"block_q": 16, "block_k": 16}  # smoke: several tiny blocks

        def P(**kw):
            return attn.BlockSparseParams(**{**blocks, **kw})

        settings: dict[str, object] = {}
        for topk in (0.2, 0.35, 0.5, 0.7, 1.0):
            settings[f"flex_topk{topk}_ownchunk"] = P(topk=topk, sink_tokens=sink, keep_own_chunk=True)
        for topk in (0.2, 0.35, 0.5):
            settings[f"flex_topk{topk}_diagonal_only"] = P(topk=topk, sink_tokens=sink, keep_own_chunk=False)
        for cdf in (0.9, 0.98):
            settings[f"flex_cdf{cdf}_ownchunk"] = P(topk=None, cdf_threshold=cdf, sink_tokens=sink)
        # the same without the self-similarity gate (SpargeAttn's cdf default 0.6 may keep all)
        for cdf in (0.5, 0.9):
            settings[f"flex_cdf{cdf}_nosimgate_diagonal_only"] = P(
                topk=None, cdf_threshold=cdf, sim_threshold=-1.0, sink_tokens=sink, keep_own_chunk=False
            )
        settings["flex_topk0.35_bk64_diagonal_only"] = P(
            topk=0.35, block_k=64 if not args.smoke else 32, sink_tokens=sink, keep_own_chunk=False
        )
        if on_gpu:
            settings["flex_topk0.5_partialblocks_ownchunk"] = P(topk=0.5, sink_tokens=sink, full_blocks=False)
        for name, params in settings.items():
            try:
                block_map = sparse_mod.build_block_map(q, k, params)
                density = sparse_mod.block_map_density(block_map, q_len, k_len, params)
                mask = sparse_mod.block_map_to_block_mask(
                    block_map, q_len, k_len, params, for_compiled=compiled
                )
            except Exception as exc:
                rows[name] = {"error": f"mask: {type(exc).__name__}: {exc}".splitlines()[0][:400]}
                continue
            build = time_ms(
                lambda params=params: sparse_mod.build_block_map(q, k, params), warmup, iters, device
            )
            to_mask = time_ms(
                lambda bm=block_map, params=params: sparse_mod.block_map_to_block_mask(
                    bm, q_len, k_len, params, for_compiled=compiled
                ),
                warmup,
                iters,
                device,
            )
            case(
                name,
                lambda mask=mask: sparse_mod.flex_block_sparse(q, k, v, mask, compiled=compiled),
                density=density,
                extra={
                    "mask_build_ms_p50": build["time_ms_p50"],
                    "block_mask_ms_p50": to_mask["time_ms_p50"],
                    "mask_total_ms_p50": build["time_ms_p50"] + to_mask["time_ms_p50"],
                },
            )
        if not args.smoke and "sparge" not in " ".join(record["skipped"]):
            for topk in (0.2, 0.5):
                params = P(topk=topk, sink_tokens=sink)
                case(
                    f"spargeattn_topk{topk}",
                    lambda params=params: attn.attention(q, k, v, backend="sparge", params=params),
                )
        # the mask builder compiled, for the default setting (eager cost above is the upper bound)
        if on_gpu and not over_budget():
            params = P(topk=0.5, sink_tokens=sink)
            try:
                built = torch.compile(sparse_mod.build_block_map, dynamic=False)
                rows["mask_build_compiled_topk0.5"] = time_ms(
                    lambda: built(q, k, params), warmup, iters, device
                )
            except Exception as exc:
                rows["mask_build_compiled_topk0.5"] = {
                    "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
                }
            save()

    for shape_name, (grid, q_frames) in shapes.items():
        if args.skip_kernels:
            break
        run_shape(shape_name, grid, q_frames)
        if on_gpu:
            torch.cuda.empty_cache()
    if args.engine:  # not bound by --budget-s: the kernel results are already saved if it is cut
        try:
            if on_gpu:
                record["metrics"]["engine_480x832"] = engine_chunk_latency(args)
            else:
                record["metrics"]["engine_tiny_cpu"] = engine_chunk_latency(
                    args, preset="tiny", latent_hw=(8, 8), device="cpu"
                )
        except Exception as exc:  # the engine is another helper's, still moving: record, don't die
            record["skipped"].append(f"engine: {type(exc).__name__}: {exc}".splitlines()[0][:400])
            if args.verbose:
                traceback.print_exc()
        save()
    record["wall_s"] = time.monotonic() - started
    save()
    print(f"wrote {out_path}")
    return record


def engine_chunk_latency(args, *, preset="wan2.1-t2v-1.3b", latent_hw=(60, 104), device="cuda") -> dict:
    """One LongLive chunk (4 steps + refresh, 480x832, full window) with dense vs sparse routers.

    RANDOM weights (no checkpoint here): the timing is real, the output difference is not a
    quality measure (random weights give near-uniform attention, the worst case for sparsity).
    Each router starts from the same snapshot (cache, window, noise state), interleaved.
    """
    import copy

    attn = load_attention()
    router_mod = importlib.import_module(f"{PKG}.attention.router")
    timing = importlib.import_module(f"{PKG}.attention.timing")
    config_mod, model_mod, sampler_mod = load_longlive()
    cfg = config_mod.WanConfig.from_name(preset)
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with device:
        model = model_mod.CausalWanModel(cfg)
    model_mod.cast_for_inference(model, dtype).eval()
    sampler = sampler_mod.StreamingSampler(model, seed=0)
    sampler.start(*latent_hw)
    stream = sampler.stream
    gen = torch.Generator().manual_seed(0)
    sampler.set_prompt(torch.randn(1, min(64, cfg.text_len), cfg.text_dim, generator=gen).to(device, dtype))
    frame_tokens = (latent_hw[0] // cfg.patch_size[1]) * (latent_hw[1] // cfg.patch_size[2])
    chunk_tokens = cfg.num_frame_per_block * frame_tokens
    sink = cfg.sink_size * frame_tokens
    blocks = {} if device.type == "cuda" else {"block_q": 16, "block_k": 16}
    for _ in range(cfg.local_attn_size // cfg.num_frame_per_block + 1):  # fill the window: steady state
        sampler.next_chunk()
    if device.type == "cuda":
        torch.cuda.synchronize()
    snapshot = (
        sampler.cache_k.clone(),
        sampler.cache_v.clone(),
        copy.copy(stream.window.ring_age),
        stream.window.chunks_written,
        stream.generator.get_state(),
        stream.chunks_done,
        stream.clean.clone(),
    )

    @torch.inference_mode()  # the engine's KV store is made (and written) under inference mode
    def restore():
        sampler.cache_k.copy_(snapshot[0])
        sampler.cache_v.copy_(snapshot[1])
        stream.window.ring_age = list(snapshot[2])
        stream.window.chunks_written = snapshot[3]
        stream.generator.set_state(snapshot[4])
        stream.chunks_done = snapshot[5]
        stream.clean.copy_(snapshot[6])

    def run_chunk(router):
        restore()
        stream.router = router
        return sampler.next_chunk()

    def P(**kw):
        return attn.BlockSparseParams(**{**blocks, **kw})

    routers = {
        "dense": attn.DenseRouter(),
        "sparse_topk0.5_t800": router_mod.SparseRouter.from_params(
            P(topk=0.5, sink_tokens=sink), cfg.num_layers
        ),
        "sparse_topk0.2_t800": router_mod.SparseRouter.from_params(
            P(topk=0.2, sink_tokens=sink), cfg.num_layers
        ),
        # the ceiling: every layer and every denoising step sparse (refresh still dense)
        "sparse_topk0.2_all_steps_all_layers": router_mod.SparseRouter.from_params(
            P(topk=0.2, sink_tokens=sink, keep_own_chunk=False),
            cfg.num_layers,
            dense_layers=frozenset(),
            timestep_threshold=1001.0,
        ),
    }
    restore_ms = timing.compare_routers(
        lambda _: restore(), {"restore": None}, warmup=1, repeats=3, device=device
    )
    warm, repeats = (2, args.engine_repeats) if device.type == "cuda" else (1, 1)
    results = timing.compare_routers(run_chunk, routers, warmup=warm, repeats=repeats, device=device)
    return {
        "weights": "random (timing only; output difference is not a quality measure)",
        "preset": preset,
        "latent_hw": list(latent_hw),
        "chunk_tokens": chunk_tokens,
        "routers": results,
        "note": "chunk_ms includes restoring the cache snapshot (restore_ms), the same for every router",
        "restore_ms": restore_ms["restore"]["chunk_ms_p50"],
    }


def markdown_table(path: str) -> str:
    """The docs' results table from a result file: per shape, every case against dense."""
    record = json.loads(Path(path).read_text())
    lines = [f"{record['device']}, torch {record['torch']}, commit {record['commit']}, {record['date']}", ""]
    for shape, m in record["metrics"].items():
        if "cases" in m:
            base = m["cases"].get("dense_default", {}).get("time_ms_p50")
            lines += [
                f"**{shape}** ({m['queries']} x {m['keys']}; top-20% block mass {m['top20_block_mass_structured']:.2f}"
                f" structured vs {m['top20_block_mass_random']:.2f} random)",
                "",
                "| case | ms (p50) | vs dense | mask ms | density | cosine | rel L1 |",
                "|---|---|---|---|---|---|---|",
            ]
            for name, row in m["cases"].items():
                if "error" in row:
                    lines.append(f"| {name} | error: {row['error'][:80]} | | | | | |")
                    continue
                t = row.get("time_ms_p50")
                speed = f"{base / t:.2f}x" if base and t else ""
                mask = row.get("mask_total_ms_p50")
                lines.append(
                    f"| {name} | {t:.3f} | {speed} | {'' if mask is None else f'{mask:.3f}'} | "
                    f"{'' if 'density' not in row else format(row['density'], '.3f')} | {row.get('cosine', float('nan')):.4f} | {row.get('rel_l1', float('nan')):.4f} |"
                )
            lines.append("")
        elif "routers" in m:
            lines += [
                f"**{shape}** (chunk: 4 steps + refresh; {m['weights']})",
                "",
                "| router | chunk ms (p50) | sparse share |",
                "|---|---|---|",
            ]
            for name, row in m["routers"].items():
                lines.append(
                    f"| {name} | {row['chunk_ms_p50']:.1f} | {row.get('sparse_selection_share', 0):.2f} |"
                )
            lines.append("")
    return "\n".join(lines)


def install_wheels(folder: str) -> None:
    """Install carried wheels (e.g. sageattention-1.0.6) offline: the GPU machine has no network."""
    wheels = sorted(str(p) for p in Path(folder).glob("*.whl"))
    if wheels:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        print(
            f"installed {len(wheels)} wheel(s) from {folder}: rc={done.returncode} {done.stderr.strip()[-300:]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="folder for the JSON")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (seconds), for tests")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument(
        "--budget-s",
        type=float,
        default=400.0,
        help="skip remaining kernel cases after this (engine still runs)",
    )
    parser.add_argument("--commit", default=os.environ.get("PERSONA_COMMIT"), help="commit id to record")
    parser.add_argument(
        "--no-engine", dest="engine", action="store_false", help="skip the engine chunk timing"
    )
    parser.add_argument("--engine-repeats", type=int, default=5)
    parser.add_argument("--skip-kernels", action="store_true", help="only the engine chunk timing")
    parser.add_argument(
        "--dense-only", action="store_true", help="dense kernels only, no block-sparse settings"
    )
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--wheels", help="folder of wheels to pip-install offline first (optional kernels)")
    parser.add_argument("--table", help="print the markdown results table of this result file and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return 0
    if args.wheels:
        install_wheels(args.wheels)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
