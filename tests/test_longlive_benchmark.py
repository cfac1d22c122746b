"""benchmarks/longlive.py runs (tiny config, CPU) and writes the result shape ARCHITECTURE.md asks for."""

import json
import subprocess
import sys

from paths import REPO


def test_benchmark_smoke_writes_result_json(tmp_path):
    out = tmp_path / "longlive.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "longlive.py"), "--smoke", "--long-run", "--profile", "--out", str(out)],
        capture_output=True, text=True, timeout=240, env={"PERSONA_COMMIT": "test", "OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert {"benchmark", "device", "torch", "commit", "dirty", "date", "config", "metrics"} <= set(record)
    assert record["benchmark"] == "longlive" and record["commit"] == "test"
    run = record["metrics"]["runs"][0]
    assert len(run["denoise_step_ms_p50"]) == 4 and run["chunk_ms_p50"] > 0 and run["fps_video_dit_only"] > 0
    assert run["recache_ms_p50"] > 0 and run["directive_to_changed_chunk_ms_p50"] >= run["recache_ms_p50"]
    long_run = run["long_run"]
    assert long_run["latent_frames"] >= 30 and long_run["cache_buffer_unchanged"] and long_run["last_chunk_finite"]
    engine = run["engine"]  # the engine's own loop (the host), frames on the host
    assert engine["fps_video_frames_on_host"] > 0 and engine["first_chunk_ms_p50"] > 0
    assert engine["directive_to_frames_ms_before_p50"] > 0 and engine["directive_to_frames_ms_after_p50"] > 0
    assert engine["batched_equals_alone_max_abs_diff"] <= 1  # two sessions batched: each as alone
    profile = run["profile"]  # on CPU: nested ops, but the grouping code path runs
    assert profile["gpu_busy_ms_per_chunk"] > 0 and profile["top_kernels"]
    assert "attention" in profile["groups"]


def kernel_smoke(script: str, tmp_path) -> dict:
    """Run a kernel benchmark's --smoke (CPU, tiny shapes) and read the one result it wrote."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240, env={"PERSONA_COMMIT": "test", "OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = tmp_path.glob("*-cpu-*.json")
    return json.loads(path.read_text())


def test_kv_write_benchmark_smoke_checks_both_writes_give_the_same_bytes(tmp_path):
    record = kernel_smoke("kv_write.py", tmp_path)
    assert record["benchmark"] == "kv-write"
    assert record["commit"] == "test" and record["metrics"]["tiny"]["same_bytes"]
    assert record["metrics"]["tiny"]["copy_tokens_words"]["ms_p50"] > 0


def test_attention_batch_benchmark_smoke_times_both_ways_and_checks_the_bits(tmp_path):
    record = kernel_smoke("attention_batch.py", tmp_path)
    assert record["benchmark"] == "attention-batch"
    row = record["metrics"]["tiny/sdpa_cudnn_first/3"]
    assert record["commit"] == "test" and row["bit_identical"] and row["sessions"] == 3
    assert row["apart"]["ms_p50"] > 0 and row["together"]["ms_p50"] > 0


def test_copy_tokens_writes_what_index_copy_writes_for_every_layout():
    """Keys as the model hands them over (a strided third of a fused projection), float32 and
    bf16, and a last dimension that is not whole 8-byte words (element copies)."""
    import torch

    from comfyui_persona.video.longlive.runtime import copy_tokens

    index = torch.tensor([5, 6, 7, 1])
    for dtype, dim in ((torch.bfloat16, 128), (torch.float32, 64), (torch.bfloat16, 3)):
        cache = torch.randn(4, 10, dim).to(dtype)
        new = torch.randn(4, 4, 3 * dim).to(dtype)[..., dim : 2 * dim]
        expected = cache.clone().index_copy_(1, index, new)
        copy_tokens(cache, index, new)
        assert torch.equal(cache, expected), (dtype, dim)


def test_the_serving_benchmarks_prefetch_setting_survives_the_sessions_it_starts():
    """`--prefetch on` reaches the host through the engine's settings: every `LongLiveBackend`
    sets `EngineHost.prefetch` from `fill_batches` when made, so setting the host alone was
    undone by the first session of each run (a GPU run labelled "prefetch on" ran with it off)."""
    import longlive
    import longlive_serving
    import torch

    from comfyui_persona.video.longlive.engine import LongLiveBackend

    engine, _ = longlive_serving.build_engine(torch, smoke=True, device=torch.device("cpu"), max_sessions=2)
    for value in ("on", "off", "on"):
        longlive.fill_batches(engine, value)
        LongLiveBackend(engine=engine).close()
        assert engine.host.prefetch is (value == "on")
    longlive.attend_together(engine, "off", (8, 12), 1)
    assert engine.runtime.attend_together is False and engine.runtime.graphs_captured == 0


def test_the_profiles_idle_time_is_the_gaps_between_kernels_sorted_by_start():
    """`gpu_idle` sums the time no kernel ran (overlaps count as none), by gap size, and names
    the kernels around the longest gap."""
    from types import SimpleNamespace

    import longlive

    def kernel(name, start, end):
        return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end))

    # a 2 µs gap, an overlap, a 50 µs gap and a 3 ms one, over two chunks
    kernels = [kernel("a", 0, 10), kernel("b", 12, 20), kernel("c", 15, 30), kernel("d", 80, 100),
               kernel("e", 3100, 3200)]
    idle = longlive.gpu_idle(kernels, chunks=2)
    assert idle["span_ms_per_chunk"] == 1.6 and idle["idle_ms_per_chunk"] == round((2 + 50 + 3000) / 2000, 3)
    assert idle["gaps"] == {"<5us": {"count_per_chunk": 0.5, "ms_per_chunk": 0.001},
                            "<100us": {"count_per_chunk": 0.5, "ms_per_chunk": 0.025},
                            ">=1000us": {"count_per_chunk": 0.5, "ms_per_chunk": 1.5}}
    assert idle["largest"][0] == {"us": 3000, "after": "d", "before": "e"}
