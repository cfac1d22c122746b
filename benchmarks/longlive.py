"""LongLive engine benchmark at the real size (1.3B, random weights: speed does not depend on them).

Measures, per resolution: each denoising pass, the clean KV-refresh pass, the whole chunk,
video FPS, time to first frame from a warm engine, re-cache cost, directive-to-first-changed
chunk (prompt switch → re-cache → next chunk), peak GPU memory; optionally with
torch.compile (compile time reported apart) and a long run (2,000 latent frames) that
checks memory stays flat. Times are CUDA-event medians after warm-up.

Decoding: TAEW2.1 and the Wan VAE (video/decoders, random weights) are timed per chunk and
added to the DiT time sequentially (`fps_video_with_tae`, `fps_video_with_vae`). `pipeline`
then times the engine's own loop (video/longlive/pipeline.py) with the TAE, on the host: video
FPS with the decode after the refresh pass or beside it on a side stream, and directive →
changed frames with the re-cache before or after the changed chunk. Text encoding is not
included (cached per prompt).

Scenes (issue 20, `--scene-prompt`, needs pydantic): steady-state chunks with a one-persona
prompt and with a two-character scene prompt (video/text/scene_prompt.py: Mira waving, Bjorn
sitting and talking), in alternating blocks; both embeddings are `text_len` rows with the
prompt's tokens filled (counted by the real UMT5 tokenizer where the models folder has it) and
zeros after, as the text encoder makes them. The DiT reads every row either way, so the two
chunk times should match.

Runs with torch alone (the package is loaded from this checkout by path):
    python benchmarks/longlive.py                      # GPU, 480x832 and 320x576
    python benchmarks/longlive.py --sizes 480x832 --scene-prompt --no-decode --label scene
    python benchmarks/longlive.py --compile max-autotune-no-cudagraphs --long-run
    python benchmarks/longlive.py --smoke --out /tmp/x.json   # tiny config, CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from record import ensure_package, result_path, write_result

REPO = Path(__file__).resolve().parents[1]


def import_package():
    """`comfyui_persona` from this checkout, installed or not (the repo root is the package)."""
    ensure_package()
    from comfyui_persona.video.longlive import config, model, sampler

    return config, model, sampler


class Timer:
    """CUDA events on a GPU (no host sync until `read`), perf_counter on CPU."""

    def __init__(self, torch, device):
        self.torch, self.cuda = torch, device.type == "cuda"

    def mark(self):
        if self.cuda:
            ev = self.torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def ms(self, a, b) -> float:
        if self.cuda:
            return a.elapsed_time(b)
        return (b - a) * 1000

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3) if xs else float("nan")


def p95(xs: list[float]) -> float:
    return round(sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)], 3) if xs else float("nan")


def chunks_back_to_back(sampler, timer, chunks: int) -> dict:
    """`chunks` chunks queued without waiting for any (the GPU's time per chunk when the host
    never holds it up), and the host's own time to queue one chunk's passes from an idle GPU.

    Why: `chunk_ms_*` waits for each chunk before the next, as a caller does, so it includes
    the host's work before the first pass; a profile runs chunks back to back. A gap between
    the two is time the GPU waited for the host."""
    timer.sync()
    started = time.perf_counter()
    timed_chunk(sampler, timer)
    host_ms = (time.perf_counter() - started) * 1000
    timer.sync()
    a = timer.mark()
    for _ in range(chunks):
        timed_chunk(sampler, timer)
    b = timer.mark()
    timer.sync()
    return {"chunk_ms_back_to_back": round(timer.ms(a, b) / chunks, 3), "host_ms_to_queue_a_chunk": round(host_ms, 3)}


def timed_chunk(sampler, timer):
    """Run one chunk exactly as `StreamingSampler.next_chunk` does (the stream's passes, the
    ring shift in the first one), with a mark after each pass: 4 denoising passes, the refresh."""
    stream, runtime = sampler.stream, sampler.runtime
    marks = [timer.mark()]
    stream.request_chunk()
    while (row := stream.next_pass()) is not None:
        stream.pass_done(runtime.run([row])[0])
        marks.append(timer.mark())
    return marks


#: `--compile` names that are Inductor settings rather than a torch.compile mode.
COMPILE_OPTIONS = {
    # Reductions over 1,536 (the norms) and 8,960 (the FFN's activation) are past Inductor's
    # persistent-reduction limit; multi_kernel also generates the persistent kernel and keeps
    # whichever runs faster, timed on first use.
    "multi-kernel": {"triton.multi_kernel": 1},
    # Inductor's plain default: `default` adds the engine's kernel tuning (runtime.TUNED_KERNELS).
    "untuned": {},
    # Every reduction up to 16,384 wide kept in registers, one pass over each row (multi_kernel
    # 2 forces the persistent variant): the norms over 1,536 otherwise loop over the row two
    # or three times and store an intermediate; with the engine's tuning.
    "persistent": {"triton.multi_kernel": 2, "coordinate_descent_tuning": True},
}


def bench_size(torch, cfgmod, modelmod, samplermod, args, device, height, width, compile_mode, graphs=False,
               timesteps="cached", attention_kernel="auto"):
    cfg = cfgmod.WanConfig.from_name(args.preset)
    dtype = getattr(torch, args.dtype)
    timer = Timer(torch, device)
    torch.manual_seed(0)
    from comfyui_persona.video.longlive.runtime import EngineRuntime

    model = modelmod.build_on_meta(cfg).to_empty(device=device)
    modelmod.init_random_(model)
    modelmod.cast_for_inference(model, dtype).eval()
    model.fuse_qkv()  # as the engine loads it
    lat_h, lat_w = height // cfg.vae_stride[1], width // cfg.vae_stride[2]
    fp8 = fp8_error(torch, model, samplermod, args, lat_h, lat_w) if args.linear == "fp8" else None
    runtime = EngineRuntime(model)  # after every change to the weights
    flash = attention_kernel != "cudnn" and runtime.use_flash_attention(required=attention_kernel == "flash")
    compile_s = None
    if compile_mode in COMPILE_OPTIONS:
        runtime.compile(options=COMPILE_OPTIONS[compile_mode])
    elif compile_mode != "none":
        runtime.compile(mode=None if compile_mode == "default" else compile_mode)
    runtime.use_cuda_graphs(graphs)
    if timesteps == "per-pass":  # the code before the cache: a new tensor, so a host sync, every pass
        runtime._timestep_tensor = lambda values: torch.tensor(values, device=device, dtype=torch.float32)
    sampler = samplermod.StreamingSampler(runtime, steps=args.steps, seed=0, recache_mode=args.recache_mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sampler.start(lat_h, lat_w)
    router = None
    if args.attention:
        from comfyui_persona.video.attention import make_router

        geometry = sampler.window.geometry
        router = make_router(json.loads(args.attention), num_layers=cfg.num_layers,
                             sink_tokens=geometry.sink_chunks * geometry.rows_per_slot)
        sampler.stream.router = router
    text_a = torch.randn(1, cfg.text_len, cfg.text_dim, device=device, dtype=dtype)
    text_b = torch.randn(1, cfg.text_len, cfg.text_dim, device=device, dtype=dtype)
    sampler.set_prompt(text_a)

    # Warm-up: fill the window (every cache fill level), and one re-cache: all graph shapes.
    t0 = time.perf_counter()
    geometry = sampler.window.geometry
    n_warm = geometry.sink_chunks + geometry.ring_chunks + 2
    for _ in range(n_warm):
        sampler.next_chunk()
    for _ in range(geometry.ring_chunks):  # a re-cache in every ring rotation: all plans built
        sampler.set_prompt(text_b)
        sampler.next_chunk()
    sampler.set_prompt(text_a)
    timer.sync()
    warmup_s = time.perf_counter() - t0
    if compile_mode != "none":
        compile_s = round(warmup_s, 2)

    # Steady state: per-pass latencies.
    step_ms: list[list[float]] = [[] for _ in sampler.timesteps]
    refresh_ms, chunk_ms = [], []
    for _ in range(args.chunks):
        marks = timed_chunk(sampler, timer)
        timer.sync()
        for i in range(len(sampler.timesteps)):
            step_ms[i].append(timer.ms(marks[i], marks[i + 1]))
        refresh_ms.append(timer.ms(marks[-2], marks[-1]))
        chunk_ms.append(timer.ms(marks[0], marks[-1]))

    back_to_back = chunks_back_to_back(sampler, timer, args.chunks)

    # Re-cache alone, and directive → first changed chunk (re-cache + next chunk).
    recache_ms, switch_ms = [], []
    texts = [text_b, text_a]
    for i in range(args.switches):
        timer.sync()
        a = timer.mark()
        sampler.set_prompt(texts[i % 2])  # re-caches the window
        b = timer.mark()
        sampler.next_chunk(defer_refresh=True)  # as the engine does: frames before the refresh pass
        c = timer.mark()
        timer.sync()
        recache_ms.append(timer.ms(a, b))
        switch_ms.append(timer.ms(a, c))

    # Time to first chunk from a warm engine: new session (cache reset), prompt set, one chunk.
    scene = bench_scene_prompt(torch, sampler, timer, cfg, device, dtype, args.chunks) if args.scene_prompt else None
    sampler.set_prompt(text_a)

    ttff_ms = []
    for _ in range(3):
        timer.sync()
        start = time.perf_counter()
        sampler.reset()
        sampler.set_prompt(text_a)
        sampler.next_chunk(defer_refresh=True)
        timer.sync()
        ttff_ms.append((time.perf_counter() - start) * 1000)

    video_frames_per_chunk = cfg.num_frame_per_block * cfg.vae_stride[0]
    result = {
        "height": height,
        "width": width,
        "compile": compile_mode,
        "cuda_graphs": graphs,
        "timesteps": timesteps,
        "attention_kernel": attention_kernel,
        "dense_attention": "flash-attn-4 for long keys" if flash else "SDPA (cuDNN first)",
        "linear": args.linear,
        "fp8_vs_bf16": fp8,
        "tokens_per_frame": geometry.tokens_per_frame,
        "recache_mode": args.recache_mode,
        "graph_replays": runtime.graph_replays,
        "denoise_step_ms_p50": [median(s) for s in step_ms],
        "kv_refresh_ms_p50": median(refresh_ms),
        "chunk_ms_p50": median(chunk_ms),
        "chunk_ms_p95": p95(chunk_ms),
        "fps_video_dit_only": round(video_frames_per_chunk * 1000 / median(chunk_ms), 2),
        **back_to_back,
        "recache_ms_p50": median(recache_ms),
        "directive_to_changed_chunk_ms_p50": median(switch_ms),
        "directive_to_changed_chunk_ms_p95": p95(switch_ms),
        "first_chunk_warm_ms_p50": median(ttff_ms),
        "warmup_s": round(warmup_s, 2),
        "compile_s": compile_s,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == "cuda" else None,
        "attention_paths": dict(router.stats) if router is not None else {"dense": "all"},
    }
    if scene is not None:
        result["scene_prompt"] = scene

    print(json.dumps(result), flush=True)  # what is measured so far survives a time limit
    if args.profile:
        result["profile"] = profile_chunk(torch, sampler, on_cpu=device.type != "cuda")
        print(json.dumps({"profile": result["profile"]}), flush=True)
    if not args.no_decode:
        result["engine"] = bench_engine(torch, runtime, device, args, (text_a, text_b), compile_mode != "none",
                                        (lat_h, lat_w))
        print(json.dumps({"engine": result["engine"]}), flush=True)
        decoders = bench_decoders(torch, device, args.smoke, compile_mode != "none", lat_h, lat_w, max(3, args.chunks // 2), timer,
                                  args.decoders.split(","))
        result["decode"] = decoders
        for name, d in decoders.items():
            if isinstance(d, dict) and "decode_chunk_ms_p50" in d:
                total = result["chunk_ms_p50"] + d["decode_chunk_ms_p50"]
                # Sequential DiT then decode on one stream (no overlap): the honest lower bound.
                result[f"fps_video_with_{name}"] = round(d["frames_per_chunk"] * 1000 / total, 2)
                result[f"first_chunk_warm_with_{name}_ms_p50"] = round(result["first_chunk_warm_ms_p50"] + d["decode_chunk_ms_p50"], 3)
                result[f"directive_to_changed_frame_with_{name}_ms_p50"] = round(
                    result["directive_to_changed_chunk_ms_p50"] + d["decode_chunk_ms_p50"], 3)
    if args.long_run:
        result["long_run"] = long_run(torch, sampler, timer, device, args.long_run_frames)
    del sampler, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


#: The prompts `--scene-prompt` compares: one persona waving; a scene where she waves and he sits and talks.
SCENE_CAST = ("mira", "bjorn")


def scene_prompts() -> dict[str, str]:
    """The one-persona prompt and the two-character scene prompt, from the built-in cards."""
    try:
        from comfyui_persona.persona.library import load_persona
        from comfyui_persona.persona.schema import ActionDirective
    except ImportError as exc:
        raise SystemExit(f"--scene-prompt composes prompts from the persona cards and needs pydantic: {exc}") from None
    from comfyui_persona.video.backend import SessionSpec
    from comfyui_persona.video.text.prompt import PromptComposer
    from comfyui_persona.video.text.scene_prompt import ScenePromptComposer

    specs = []
    for persona_id in SCENE_CAST:
        persona = load_persona(persona_id)
        vocabulary = persona.vocabulary()
        specs.append(SessionSpec(persona_id=persona.id, persona_name=persona.name,
                                 look=persona.appearance.model_dump(mode="json"), vocabulary={
                                     "actions": [e.model_dump(mode="json") for e in vocabulary.actions],
                                     "expressions": [e.model_dump(mode="json") for e in vocabulary.expressions]}))
    wave = ActionDirective(action="wave", expression="smile", intensity=0.7, character="mira")
    sit = ActionDirective(action="sit", expression="neutral", intensity=0.6, character="bjorn")
    return {"one_persona": PromptComposer.from_session(specs[0]).compose(wave.model_copy(update={"character": None})),
            "two_characters": ScenePromptComposer.from_specs(specs).compose([wave, sit], speaking="bjorn")}


def prompt_token_counts(prompts: dict[str, str]) -> tuple[dict[str, int] | None, str]:
    """Tokens each prompt takes with `</s>`, by the real UMT5 tokenizer in the models folder
    ($PERSONA_MODELS_DIR), and where it came from; (None, why) without one."""
    from comfyui_persona.video import model_files

    try:
        path = model_files.find("umt5.tokenizer")
    except model_files.CheckpointNotFoundError as exc:
        return None, f"no UMT5 tokenizer ({str(exc).splitlines()[0]})"
    from comfyui_persona.video.text.scene_prompt import umt5_token_counter
    from comfyui_persona.video.text.umt5 import load_tokenizer

    count = umt5_token_counter(load_tokenizer(path))
    return {name: count(text) + 1 for name, text in prompts.items()}, str(path)


def bench_scene_prompt(torch, sampler, timer, cfg, device, dtype, chunks: int) -> dict:
    """Steady-state chunk time with a one-persona prompt and with a two-character scene prompt,
    in alternating blocks (A B A B), each block after its prompt switch and one untimed chunk."""
    prompts = scene_prompts()
    tokens, tokenizer = prompt_token_counts(prompts)
    gen = torch.Generator(device="cpu").manual_seed(1)
    texts = {}
    for name in prompts:
        rows = min(tokens[name], cfg.text_len) if tokens else cfg.text_len
        context = torch.zeros(1, cfg.text_len, cfg.text_dim)
        context[:, :rows] = torch.randn(1, rows, cfg.text_dim, generator=gen)
        texts[name] = context.to(device=device, dtype=dtype)
    times: dict[str, list[float]] = {name: [] for name in prompts}
    block = max(2, chunks // 2)
    for name in [*prompts, *prompts]:
        sampler.set_prompt(texts[name])
        sampler.next_chunk()
        for _ in range(block):
            marks = timed_chunk(sampler, timer)
            timer.sync()
            times[name].append(timer.ms(marks[0], marks[-1]))
    result = {"prompts": prompts, "tokens_with_eos": tokens, "tokenizer": tokenizer, "text_len": cfg.text_len,
              "chunks_timed_each": len(times["one_persona"])}
    for name, values in times.items():
        result[f"chunk_ms_p50_{name}"] = median(values)
        result[f"chunk_ms_p95_{name}"] = p95(values)
    result["chunk_ms_p50_ratio_two_to_one"] = round(result["chunk_ms_p50_two_characters"]
                                                    / result["chunk_ms_p50_one_persona"], 4)
    return result


def bench_engine(torch, runtime, device, args, texts, compiled: bool, lat_hw) -> dict:
    """The engine's own loop (`EngineHost`: passes, TAE decode on a side stream, frames copied to
    pinned host memory) for one session at this size, timed on the host as a viewer sees it.

    - `fps_video_frames_on_host`: chunks back to back;
    - `first_chunk_ms_*`: a new session on a warm engine, until its first frames are on the host;
    - `directive_to_frames_ms_<timing>_*`: from an idle GPU, a prompt switch until the changed
      chunk's frames are on the host, the re-cache before or after that chunk;
    - `batched_equals_alone_max_abs_diff`: two sessions stepped together vs each alone (uint8).
    """
    from comfyui_persona.video.longlive.host import EngineHost

    tae = engine_tae(torch, device, args.smoke, compiled)
    host = EngineHost(runtime, tae, max_sessions=4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict = {}
    session = host.open_session(*lat_hw, seed=0, recache_mode=args.recache_mode)
    session.set_prompt(texts[0])
    for _ in range(6):
        session.next_frames()
    sync()
    start = time.perf_counter()
    frames = sum(session.next_frames().shape[0] for _ in range(args.chunks))
    out["fps_video_frames_on_host"] = round(frames / (time.perf_counter() - start), 2)
    for timing in ("before", "after"):
        times = []
        for i in range(args.switches):
            session.next_frames()  # the chunk after the last switch (its re-cache, in "after")
            host.settle(session)
            sync()
            start = time.perf_counter()
            session.set_prompt(texts[i % 2], timing=timing)
            session.next_frames()
            times.append((time.perf_counter() - start) * 1000)
        out[f"directive_to_frames_ms_{timing}_p50"] = median(times)
        out[f"directive_to_frames_ms_{timing}_p95"] = p95(times)
    firsts = []
    for _ in range(3):
        host.settle(session)
        sync()
        start = time.perf_counter()
        session.restart(seed=0)
        session.set_prompt(texts[0])
        session.next_frames()
        firsts.append((time.perf_counter() - start) * 1000)
    out["first_chunk_ms_p50"] = median(firsts)
    out["first_chunk_ms_max"] = round(max(firsts), 3)
    # Batched parity: two sessions stepped together equal each alone (within rounding).
    session.restart(seed=0)
    session.set_prompt(texts[0])
    alone = [session.next_frames() for _ in range(3)]
    session.restart(seed=0)
    session.set_prompt(texts[0])
    other = host.open_session(*lat_hw, seed=1, recache_mode=args.recache_mode)
    other.set_prompt(texts[1])
    together = [host.step_all([session, other])[0] for _ in range(3)]
    out["batched_equals_alone_max_abs_diff"] = max(int((a.int() - b.int()).abs().max())
                                                  for a, b in zip(alone, together, strict=True))
    out["graph_replays"] = runtime.graph_replays
    other.close()
    session.close()
    return out


#: Kernel-name patterns for `profile_chunk`'s breakdown, first match wins. Inductor's fused
#: kernels come first: their names list the ops they absorbed (`triton_red_fused__scaled_mm_...`
#: is a quantisation next to a GEMM, not a GEMM). Results committed before this order put them
#: under "gemm" / "attention"; their `top_kernels` lists are right.
KERNEL_GROUPS = (
    ("triton_fused", r"^triton_"),
    ("attention", r"sdpa|fmha|flash|attn|attention"),
    ("gemm", r"gemm|nvjet|xmma|cutlass|scaled_mm|matmul|cublas"),
    ("copy_index", r"copy|index|gather|scatter|cat|memcpy|memset"),
)


def profile_chunk(torch, sampler, chunks: int = 2, *, on_cpu: bool = False) -> dict:
    """Where a steady-state chunk's GPU time goes: kernels grouped by kind, and the top kernels.

    torch.profiler over `chunks` chunks (refresh pass included); times are per chunk, summed
    kernel durations (kernels on one stream do not overlap, so the sum is the busy time).
    `on_cpu` traces CPU ops instead (nested, so their sum over-counts): a code-path check only."""
    import re

    from torch.profiler import ProfilerActivity, profile

    sync = (lambda: None) if on_cpu else torch.cuda.synchronize
    activity, kind = ((ProfilerActivity.CPU, torch.autograd.DeviceType.CPU) if on_cpu
                      else (ProfilerActivity.CUDA, torch.autograd.DeviceType.CUDA))
    sampler.next_chunk()  # anything lazy happens outside the trace
    sync()
    with profile(activities=[activity]) as prof:
        for _ in range(chunks):
            sampler.next_chunk()
        sync()
    per_kernel: dict[str, list[float]] = {}
    kernels = sorted((e for e in prof.events() if e.device_type == kind), key=lambda e: e.time_range.start)
    for event in kernels:
        per_kernel.setdefault(event.name, []).append(event.time_range.elapsed_us() / 1000)
    groups: dict[str, dict] = {}
    for name, times in per_kernel.items():
        group = next((g for g, pattern in KERNEL_GROUPS if re.search(pattern, name, re.I)), "other")
        entry = groups.setdefault(group, {"ms_per_chunk": 0.0, "launches_per_chunk": 0})
        entry["ms_per_chunk"] += sum(times) / chunks
        entry["launches_per_chunk"] += len(times) // chunks
    top = sorted(per_kernel.items(), key=lambda kv: -sum(kv[1]))[:20]
    busy = sum(g["ms_per_chunk"] for g in groups.values())
    return {
        "gpu_busy_ms_per_chunk": round(busy, 3),
        "groups": {g: {"ms_per_chunk": round(v["ms_per_chunk"], 3), "share": round(v["ms_per_chunk"] / busy, 4),
                       "launches_per_chunk": v["launches_per_chunk"]} for g, v in sorted(groups.items())},
        "top_kernels": [{"name": name[:160], "ms_per_chunk": round(sum(t) / chunks, 3),
                         "calls_per_chunk": len(t) // chunks} for name, t in top],
        "kernel_count_by_name": {name[:120]: len(t) // chunks for name, t in
                                 sorted(per_kernel.items(), key=lambda kv: -len(kv[1]))[:60]},
        "idle": gpu_idle(kernels, chunks) if not on_cpu else None,
    }


#: Upper edges (µs) of the idle-gap buckets `gpu_idle` sums.
GAP_BUCKETS_US = (2, 5, 20, 100, 1000)


def gpu_idle(kernels: list, chunks: int) -> dict:
    """Where the GPU sat idle between consecutive kernels (sorted by start): per chunk, the
    idle time by gap size, and the largest gaps with the kernels either side.

    Why: a chunk's summed kernel time is shorter than its wall time; whether the difference is
    thousands of small gaps between a graph's kernels (fewer kernels would help) or a few long
    ones where the host prepares the next pass (the host would) decides what to cut."""
    gaps = []
    for before, after in zip(kernels, kernels[1:], strict=False):
        gap = after.time_range.start - before.time_range.end
        if gap > 0:
            gaps.append((gap, before.name, after.name))
    span = (kernels[-1].time_range.end - kernels[0].time_range.start) if kernels else 0
    buckets: dict[str, dict] = {}
    for gap, _, _ in gaps:
        edge = next((e for e in GAP_BUCKETS_US if gap < e), None)
        name = f"<{edge}us" if edge is not None else f">={GAP_BUCKETS_US[-1]}us"
        entry = buckets.setdefault(name, {"count_per_chunk": 0.0, "ms_per_chunk": 0.0})
        entry["count_per_chunk"] += 1 / chunks
        entry["ms_per_chunk"] += gap / 1000 / chunks
    return {
        "span_ms_per_chunk": round(span / 1000 / chunks, 3),
        "idle_ms_per_chunk": round(sum(g for g, _, _ in gaps) / 1000 / chunks, 3),
        "gaps": {k: {"count_per_chunk": round(v["count_per_chunk"], 1), "ms_per_chunk": round(v["ms_per_chunk"], 3)}
                 for k, v in buckets.items()},
        "largest": [{"us": round(g, 1), "after": b[:80], "before": a[:80]}
                    for g, b, a in sorted(gaps, key=lambda x: -x[0])[:10]],
    }


def fp8_error(torch, model, samplermod, args, lat_h, lat_w) -> dict:
    """Quantise the block linears to FP8 in place; report how far two chunks move from bf16.

    Random weights: this measures the arithmetic error of the FP8 path through 30 blocks, not
    visual quality (that needs the real weights)."""
    from comfyui_persona.video.longlive.fp8 import quantize_blocks_fp8

    gen = torch.Generator(device="cpu").manual_seed(1)
    cfg = model.cfg
    text = torch.randn(1, cfg.text_len, cfg.text_dim, generator=gen).to(model.patch_embedding.weight)
    sampler = samplermod.StreamingSampler(model, steps=args.steps, seed=0)

    def two_chunks():
        sampler.start(lat_h, lat_w)
        sampler.set_prompt(text)
        return torch.cat([sampler.next_chunk().float() for _ in range(2)])

    ref = two_chunks()
    replaced = quantize_blocks_fp8(model)
    out = two_chunks()
    rel_l1 = ((out - ref).abs().sum() / ref.abs().sum()).item()
    cosine = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item()
    return {"layers_fp8": replaced, "chunks": 2, "rel_l1": round(rel_l1, 5), "cosine": round(cosine, 6)}


def engine_tae(torch, device, smoke: bool, compiled: bool):
    """TAEW2.1 (random weights) as the engine runs it: fp16, compiled on a GPU when the DiT is."""
    from comfyui_persona.video.decoders.taehv import build_taehv

    tae = build_taehv(device, torch.float32 if smoke else torch.float16, "tiny" if smoke else "taew2.1")
    if compiled and device.type == "cuda":
        tae.compile()
    return tae


def time_decode(stream, latents, chunks: int, timer, warmup: int):
    """Decode `latents` on `stream` again and again: (the first chunk's frames, the last
    timed chunk's frames, ms per timed chunk after `warmup` untimed ones)."""
    first = stream.decode_uint8(latents)  # first chunk of a stream: fewer frames
    for _ in range(warmup):  # compilation / autotuning happen here
        stream.decode_uint8(latents)
    times = []
    for _ in range(chunks):
        timer.sync()
        a = timer.mark()
        frames = stream.decode_uint8(latents)
        b = timer.mark()
        timer.sync()
        times.append(timer.ms(a, b))
    return first, frames, times


def bench_decoders(torch, device, smoke: bool, compiled: bool, lat_h: int, lat_w: int, chunks: int, timer, names) -> dict:
    """Streaming decode of one 3-latent-frame chunk with TAEW2.1 and the Wan VAE (H4b's
    video/decoders), random weights, random latents. Absent decoders are reported as such."""
    out = {}
    try:
        from comfyui_persona.video.decoders.wan_vae import build_wan_vae
    except ImportError as exc:
        return {"error": f"video/decoders not importable: {exc}"}
    builders = {
        "tae": lambda: engine_tae(torch, device, smoke, compiled),
        "vae": lambda: build_wan_vae(device, torch.float32 if smoke else torch.bfloat16, "tiny" if smoke else "wan2.1-vae"),
    }
    gen = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn(1, 16, 3, lat_h, lat_w, generator=gen, device=device)
    for name in names:
        model = builders[name]()
        stream = model.decode_stream()
        first, frames, times = time_decode(stream, latents, chunks, timer, warmup=2)
        out[name] = {
            "decode_chunk_ms_p50": median(times),
            "frames_per_chunk": int(frames.shape[1]),
            "first_chunk_frames": int(first.shape[1]),
            "frame_hw": [int(frames.shape[2]), int(frames.shape[3])],
        }
        if name == "tae" and device.type == "cuda":
            out["tae_variants"] = tae_variants(torch, device, latents, chunks, timer)
        del model, stream
    return out


def tae_variants(torch, device, latents, chunks: int, timer) -> dict:
    """The TAE's per-chunk decode plain and compiled (`TAEHV.compile`), fresh streams, same
    latents, and how far the compiled frames are from the plain ones (uint8 levels).
    (cuDNN autotuning and channels-last weights were measured once and lost: 15.07 and 23.6 ms
    against 15.14 plain, benchmarks/results/longlive-h100-2026-11-25-profile.json.)"""
    out, frames = {}, {}
    for name, compiled in (("plain", False), ("compiled", True)):
        stream = engine_tae(torch, device, False, compiled).decode_stream()
        frames[name], _, times = time_decode(stream, latents, chunks, timer, warmup=3)
        out[name] = {"decode_chunk_ms_p50": median(times)}
    out["compiled"]["first_chunk_max_abs_diff"] = int((frames["compiled"].int() - frames["plain"].int()).abs().max())
    return out


def long_run(torch, sampler, timer, device, frames: int) -> dict:
    """Stream `frames` latent frames in one session; memory must not grow, nothing may cut."""
    sampler.reset()
    mem = (lambda: torch.cuda.memory_allocated()) if device.type == "cuda" else (lambda: 0)
    first_mem = None
    chunk_ms, mems = [], []
    made = 0
    ptr = sampler.runtime.store.cache_k.data_ptr()
    start = time.perf_counter()
    while made < frames:
        a = timer.mark()
        x = sampler.next_chunk()
        b = timer.mark()
        made += x.shape[2]
        if made % 300 < x.shape[2] or made >= frames:
            timer.sync()
            chunk_ms.append(timer.ms(a, b))
            mems.append(mem())
            if first_mem is None:
                first_mem = mems[-1]
    timer.sync()
    finite = bool(torch.isfinite(x).all().item())
    return {
        "latent_frames": made,
        "video_seconds": round(made * 4 / 16, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "chunk_ms_sampled_p50": median(chunk_ms),
        "mem_allocated_first_gib": round(first_mem / 2**30, 3),
        "mem_allocated_last_gib": round(mems[-1] / 2**30, 3),
        "mem_growth_mib": round((max(mems) - first_mem) / 2**20, 2),
        "cache_buffer_unchanged": sampler.runtime.store.cache_k.data_ptr() == ptr,
        "last_chunk_finite": finite,
    }


def fill_batches(engine, value: str) -> None:
    """Prefetch ("on"/"off") for the sessions made next: through the engine's settings, since each
    `LongLiveBackend` sets `EngineHost.prefetch` from `fill_batches` when it starts (setting the
    host's attribute alone was undone by the next session: the 605ded8 run labelled "prefetch
    on" ran with it off, `prefetched` 0 in its host counts)."""
    engine.settings = engine.settings.model_copy(update={"fill_batches": value == "on"})
    engine.host.prefetch = value == "on"


def attend_together(engine, value: str, latent_hw: tuple[int, int], sessions: int) -> None:
    """Set `EngineRuntime.attend_together` ("on"/"off"); on a change, capture the graphs again
    (warm-up) before anything is timed: the old ones replay the other way."""
    runtime = engine.host.runtime
    if runtime.attend_together != (value == "on"):
        runtime.attend_together = value == "on"
        runtime.drop_cuda_graphs()
        engine.host.warm_up(*latent_hw, batch_sizes=tuple(sorted({1, sessions})))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU, a few chunks (seconds)")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/longlive-<device>-<date>.json)")
    parser.add_argument("--label", default="", help="suffix of the default result file name")
    parser.add_argument("--recache-mode", default="stock", choices=["stock", "causal"],
                        help="prompt-switch re-cache semantics (video/longlive/stream.py)")
    parser.add_argument("--sizes", default="480x832,320x576", help="HxW list")
    parser.add_argument("--compile", default="auto",
                        help="comma list of: auto (the engine's default: default on a GPU, none on CPU), none, default, "
                        "max-autotune-no-cudagraphs, multi-kernel, untuned (Inductor's default without the engine's kernel "
                        "tuning), persistent (reductions in registers, one pass a row)")
    parser.add_argument("--cuda-graphs", default="on", choices=["off", "on", "both"],
                        help="replay each pass as a CUDA graph (the engine's default on a GPU); both: one run each")
    parser.add_argument("--timesteps", default="cached", choices=["cached", "per-pass", "both"],
                        help="per-pass: make each pass's timestep tensor anew, as before the engine cached "
                        "them (a host sync per pass), for a side-by-side; both: one run each")
    parser.add_argument("--chunks", type=int, default=20, help="timed chunks per size")
    parser.add_argument("--switches", type=int, default=6, help="timed prompt switches per size")
    parser.add_argument("--attention-kernel", default="auto",
                        help="dense attention: auto (the engine's default: FlashAttention-4 for long keys on Hopper "
                        "where installed), flash (required), cudnn; a comma list runs each, side by side")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--linear", default="auto", choices=["auto", "bf16", "fp8"],
                        help="block linears in the model dtype, or FP8 e4m3 (video/longlive/fp8.py); auto: the "
                        "engine's default (fp8 on Hopper and newer)")
    parser.add_argument("--attention", default="", help='sparse routing settings as JSON, e.g. \'{"sparge_attention": true}\' (default dense SDPA)')
    parser.add_argument("--no-decode", action="store_true", help="skip the decode timing and the engine-loop (pipeline) runs")
    parser.add_argument("--decoders", default="tae,vae", help="decoders timed alone: comma list of tae, vae")
    parser.add_argument("--profile", action="store_true",
                        help="also break a steady-state chunk's GPU time down by kernel (torch.profiler; on CPU "
                        "it lists nested ops, a code-path check only)")
    parser.add_argument("--long-run", action="store_true", help="also stream --long-run-frames latent frames")
    parser.add_argument("--long-run-frames", type=int, default=2000)
    parser.add_argument("--scene-prompt", action="store_true",
                        help="also time chunks with a two-character scene prompt against a one-persona prompt "
                        "(issue 20; needs pydantic; token counts from the UMT5 tokenizer in $PERSONA_MODELS_DIR when "
                        "present)")
    serving = parser.add_argument_group("serving (benchmarks/longlive_serving.py; sessions through LongLiveBackend, "
                                        "needs pydantic)")
    serving.add_argument("--paced", action="store_true",
                         help="sessions at real-time pace, directives at random times: directive → changed frame "
                         "received/shown, p50/p95, for each --sessions count")
    serving.add_argument("--capacity", action="store_true",
                         help="per-session fps for each --sessions count, batched; and separate processes "
                         "(--processes) and CUDA MPS where available")
    serving.add_argument("--interrupt", action="store_true", help="interrupt latency and no frame gap after it")
    serving.add_argument("--sessions", default="1,2,3", help="session counts (paced and capacity), per size")
    serving.add_argument("--processes", default="", help="process counts for the separate-process comparison")
    serving.add_argument("--seconds", type=float, default=20.0, help="paced run length per session count")
    serving.add_argument("--queue-ahead", default="1",
                         help="comma list: ticks the engine host queues on the GPU behind the running one "
                         "(EngineHost.queue_ahead; the default is 1); paced runs once per value, side by side")
    serving.add_argument("--prefetch", default="off",
                         help="comma list of on/off: whether the engine host begins a session's next chunk early "
                         "to join another's batch (EngineHost.prefetch; the default is off); paced and capacity "
                         "runs once per value, side by side")
    serving.add_argument("--attend-together", default="on",
                         help="comma list of on/off: whether sessions reading the same keys attend in one call "
                         "(EngineRuntime.attend_together; the default is on); paced and capacity runs once "
                         "per value, side by side")
    serving.add_argument("--directive-every", default="1.5,3.0",
                         help="seconds between a session's directives: uniform in [a, b]")
    serving.add_argument("--blend-recache", default="last",
                         help="comma list of last/each: when a directive's prompt blend re-caches the KV window "
                         "(LongLiveBackend blend_recache; the default is last); paced runs once per value, "
                         "side by side")
    args = parser.parse_args(argv)
    if args.paced:  # settings need pydantic, which only the serving steps require
        ensure_package()
        from comfyui_persona.video.longlive.settings import BLEND_RECACHE

        if set(args.blend_recache.split(",")) - set(BLEND_RECACHE):
            parser.error(f"--blend-recache takes {' and/or '.join(BLEND_RECACHE)}, got {args.blend_recache!r}")
    unknown = set(args.decoders.split(",")) - {"tae", "vae"}
    if unknown:
        parser.error(f"--decoders takes tae and/or vae, got {', '.join(sorted(unknown))}")
    for name in ("prefetch", "attend_together"):
        if set(getattr(args, name).split(",")) - {"on", "off"}:
            parser.error(f"--{name.replace('_', '-')} takes on and/or off, got {getattr(args, name)!r}")

    cfgmod, modelmod, samplermod = import_package()
    import torch

    if args.smoke:
        args.preset, args.dtype, args.sizes = "tiny-engine", "float32", "64x96"
        args.chunks, args.switches = min(args.chunks, 4), min(args.switches, 2)
        args.seconds = min(args.seconds, 4.0)
        args.long_run_frames = min(args.long_run_frames, 30)
        device = torch.device("cpu")
    else:
        args.preset = "wan2.1-t2v-1.3b"
        if not torch.cuda.is_available():
            parser.error("no CUDA device: use --smoke for the CPU check")
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    card = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or "cpu")
    short = "h200" if "H200" in card else "h100" if "H100" in card else device.type
    capability = torch.cuda.get_device_capability() if device.type == "cuda" else None
    if args.linear == "auto":  # as LongLiveSettings resolves it
        args.linear = "fp8" if capability is not None and capability >= (9, 0) else "bf16"
    args.compile = ",".join(("default" if device.type == "cuda" else "none") if m.strip() == "auto" else m.strip()
                            for m in args.compile.split(","))
    unknown = {k.strip() for k in args.attention_kernel.split(",")} - {"auto", "flash", "cudnn"}
    if unknown:
        parser.error(f"--attention-kernel takes auto, flash or cudnn, not {', '.join(sorted(unknown))}")
    if args.paced or args.capacity or args.interrupt:
        return serve(args, torch, device, card, short)
    results: list[dict] = []
    out = args.out or result_path("longlive", short, args.label)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        """After every run, so a timeout or a failing compile mode keeps what was measured."""
        write_result(out, "longlive", card, config={
                "preset": args.preset,
                "dtype": args.dtype,
                "linear": args.linear,
                "steps": args.steps,
                "sizes": args.sizes,
                "compile": args.compile,
                "cuda_graphs": args.cuda_graphs,
                "timesteps": args.timesteps,
                "recache_mode": args.recache_mode,
                "attention_kernel": args.attention_kernel,
                "chunks_timed": args.chunks,
                "scene_prompt": args.scene_prompt,
                "weights": "random (meta -> to_empty -> seeded init)",
                "attention": args.attention or "dense SDPA (DenseRouter)",
                "not_included": "text encoding (cached per prompt); decode is timed separately per decoder and "
                "added sequentially in fps_video_with_<decoder> (no DiT/decode overlap); `engine` times the "
                "engine's own loop (video/longlive/host.py) with the TAE, frames on the host",
                "latency_paths": "directive-to-changed and first-chunk times defer the chunk's refresh pass "
                "to the next chunk, as the engine does (StreamingSampler.next_chunk(defer_refresh=True))",
            }, metrics={"runs": results})

    graph_settings = {"off": [False], "on": [True], "both": [False, True]}[args.cuda_graphs]
    timestep_settings = ["per-pass", "cached"] if args.timesteps == "both" else [args.timesteps]
    runs = [(mode.strip(), graphs, size, ts, kernel.strip()) for mode in args.compile.split(",")
            for graphs in graph_settings for size in args.sizes.split(",") for ts in timestep_settings
            for kernel in args.attention_kernel.split(",")]
    with torch.inference_mode():
        for mode, graphs, size, ts, kernel in runs:
            h, w = (int(v) for v in size.lower().split("x"))
            try:
                res = bench_size(torch, cfgmod, modelmod, samplermod, args, device, h, w, mode, graphs, ts, kernel)
            except Exception as exc:  # keep the other runs' numbers; say what failed
                if args.smoke:
                    raise
                import traceback

                traceback.print_exc()
                res = {"height": h, "width": w, "compile": mode, "cuda_graphs": graphs, "timesteps": ts,
                       "attention_kernel": kernel,
                       "error": f"{type(exc).__name__}: {exc}"[:2000]}
            finally:
                if mode.strip() != "none":
                    import torch._dynamo

                    torch._dynamo.reset()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            print(json.dumps(res), flush=True)
            results.append(res)
            write()
    print(f"wrote {out}")
    return 0


def serve(args, torch, device, card: str, short: str) -> int:
    """--paced / --capacity / --interrupt: sessions through the engine host (longlive_serving.py)."""
    import longlive_serving as serving

    out = args.out or result_path("longlive-serving", short, args.label)
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"paced": [], "capacity": [], "processes": [], "mps": [], "interrupt": []}
    counts = [int(n) for n in args.sessions.split(",") if n.strip()]
    processes = [int(n) for n in args.processes.split(",") if n.strip()]
    every = tuple(float(v) for v in args.directive_every.split(","))
    queue_ahead = [int(v) for v in args.queue_ahead.split(",") if v.strip()]
    prefetch = [v.strip() for v in args.prefetch.split(",") if v.strip()]
    together = [v.strip() for v in args.attend_together.split(",") if v.strip()]
    recache = [v.strip() for v in args.blend_recache.split(",") if v.strip()]
    if "," in args.attention_kernel:
        raise SystemExit("--attention-kernel takes one value with --paced/--capacity/--interrupt")
    settings_kw = {"compile": "on" if "default" in args.compile else "off", "linear_precision": args.linear,
                   "attention_kernel": args.attention_kernel,
                   "recache_mode": args.recache_mode, "cuda_graphs": args.cuda_graphs != "off"}

    def write(extra: dict | None = None) -> None:
        write_result(out, "longlive-serving", card, config={
            "preset": args.preset, "sizes": args.sizes, "sessions": counts, "processes": processes,
            "settings": settings_kw, "queue_ahead": queue_ahead, "prefetch": prefetch, "attend_together": together, "blend_recache": recache,
            "seconds_per_paced_run": args.seconds, "directive_every_s": every,
            "weights": "random (meta -> to_empty -> seeded init); prompts are fixed random embeddings (UMT5 not "
            "on the paced path: cached per prompt)",
            "frames": "TAE-decoded, copied to host memory; 'received' = on the client, 'shown' = when its 16 fps "
            "player shows it",
            **(extra or {})}, metrics=metrics)

    started = time.perf_counter()
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.lower().split("x"))
        with torch.inference_mode():
            engine, speed = serving.build_engine(torch, smoke=args.smoke, device=device, settings_kw=settings_kw,
                                                 max_sessions=max(counts + [1]))
            lat = (h // 8, w // 8)
            warm = None
            if speed.compile:  # every compiled shape before anything is timed (as a load does)
                warm = round(engine.host.warm_up(*lat, batch_sizes=tuple(sorted({1, max(counts + [1])}))), 1)
            metrics.setdefault("warm_up_s", {})[size] = warm
            # what ran, not what was asked: FlashAttention-4 falls back to SDPA when its start-up check fails
            dense = "flash-attn-4 for long keys" if engine.host.runtime.flash_attention else "SDPA (cuDNN first)"
            metrics.setdefault("dense_attention", {})[size] = dense
            print(json.dumps({"size": size, "warm_up_s": warm, "dense_attention": dense, "speed": str(speed)}),
                  flush=True)
            if args.interrupt:
                res = serving.interrupt_latency(engine, torch, h, w, samples=8 if args.smoke else 12)
                metrics["interrupt"].append(res)
                print(json.dumps({"interrupt": res}), flush=True)
                write()
            for one_call, early, n in [(a, p, n) for a in together for p in prefetch for n in counts] if args.capacity else []:
                fill_batches(engine, early)
                attend_together(engine, one_call, lat, max(counts + [1]))
                res = {"prefetch": early, "attend_together": one_call,
                       **serving.throughput(engine, torch, n, h, w, chunks=3 if args.smoke else 24)}
                metrics["capacity"].append(res)
                print(json.dumps({"capacity": res}), flush=True)
                write()
            runs = [(a, o, p, b, n) for a in queue_ahead for o in together for p in prefetch for b in recache
                    for n in counts]
            for ahead, one_call, early, blend_recache, n in runs if args.paced else []:
                engine.host.queue_ahead = ahead
                fill_batches(engine, early)
                attend_together(engine, one_call, lat, max(counts + [1]))
                res = {"queue_ahead": ahead, "attend_together": one_call, "prefetch": early,
                       "blend_recache": blend_recache,
                       **serving.paced(engine, torch, n, h, w, args.seconds, every_s=every, seed=n,
                                       blend_recache=blend_recache)}
                metrics["paced"].append(res)
                print(json.dumps({"paced": res}), flush=True)
                write()
            del engine
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for n in processes:
            res = serving.separate_processes(n, h, w, 1.0 if args.smoke else 15.0, smoke=args.smoke,
                                             ready_timeout_s=240.0)
            metrics["processes"].append(res)
            print(json.dumps({"processes": res}), flush=True)
            write()
        if processes and not args.smoke:
            why = serving.mps_available()
            if why is not None:
                metrics["mps"].append({"error": why})
            else:
                n = max(processes)
                metrics["mps"].append(serving.with_mps(lambda env, n=n, h=h, w=w: serving.separate_processes(
                    n, h, w, 15.0, smoke=False, ready_timeout_s=240.0, env=env)))
            write()
    write({"wall_s": round(time.perf_counter() - started, 1)})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
