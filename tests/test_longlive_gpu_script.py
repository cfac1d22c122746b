"""benchmarks/gpu_wave2.sh --smoke: every step of the GPU run, on CPU with tiny models, so it cannot rot.

The script the lead runs on an H100 (two calls of at most 10 minutes) runs the same steps with
real sizes; here each must exit 0 and write the result files the report quotes.
"""

import json
import os
import subprocess
import sys

import pytest

from paths import REPO

pytestmark = pytest.mark.slow


def test_gpu_script_smoke_runs_every_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "PERSONA_COMMIT": "smoke",
           "PERSONA_DIRTY": "false", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_wave2.sh"), "--smoke"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    steps = {line.split()[0]: line.split()[1] for line in (tmp_path / "steps.txt").read_text().splitlines()}
    assert steps == {"tests": "0", "single": "0", "paced": "0", "capacity": "0"}, steps
    for name in steps:  # each raw log names what produced it (kept logs must: test_benchmark_results.py)
        first = (tmp_path / f"{name}.log").read_text().split("\n", 1)[0]
        assert first.startswith(f"# provenance: raw output of step '{name}'") and "commit smoke, dirty false" in first, first
    results = tmp_path / "results"
    single = json.loads((results / "single.json").read_text())
    assert single["commit"] == "smoke" and single["dirty"] is False
    engine = single["metrics"]["runs"][0]["engine"]
    assert engine["fps_video_frames_on_host"] > 0 and engine["batched_equals_alone_max_abs_diff"] <= 1
    paced = json.loads((results / "paced.json").read_text())["metrics"]["paced"]
    assert [p["sessions"] for p in paced] == [1, 2]
    assert all(p["directives_measured"] > 0 and p["directive_to_first_changed_frame_received_ms_p50"] > 0 for p in paced)
    capacity = json.loads((results / "capacity.json").read_text())["metrics"]
    assert [c["sessions"] for c in capacity["capacity"]] == [1, 2]
    assert capacity["processes"][0]["fps_video_per_process_min"] > 0, capacity["processes"]
    interrupt = capacity["interrupt"][0]
    assert interrupt["interrupted"] > 0 and interrupt["frame_gaps_after"] == 0
    assert "interrupt @ 64x96" in (tmp_path / "summary.txt").read_text()
