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
    assert {"benchmark", "device", "torch", "commit", "date", "config", "metrics"} <= set(record)
    assert record["benchmark"] == "longlive" and record["commit"] == "test"
    run = record["metrics"]["runs"][0]
    assert len(run["denoise_step_ms_p50"]) == 4 and run["chunk_ms_p50"] > 0 and run["fps_video_dit_only"] > 0
    assert run["recache_ms_p50"] > 0 and run["directive_to_changed_chunk_ms_p50"] >= run["recache_ms_p50"]
    long_run = run["long_run"]
    assert long_run["latent_frames"] >= 30 and long_run["cache_buffer_unchanged"] and long_run["last_chunk_finite"]
    pipeline = run["pipeline"]  # the engine's own loop, both variants of each choice
    assert pipeline["fps_video_sequential"] > 0 and pipeline["fps_video_overlapped"] > 0
    assert pipeline["directive_to_frames_ms_before_p50"] > 0 and pipeline["directive_to_frames_ms_after_p50"] > 0
    assert pipeline["overlap_max_abs_diff"] == 0  # the side stream changes no frame
    profile = run["profile"]  # on CPU: nested ops, but the grouping code path runs
    assert profile["gpu_busy_ms_per_chunk"] > 0 and profile["top_kernels"]
    assert "attention" in profile["groups"]
