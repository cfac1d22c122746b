"""benchmarks/lipsync.py runs end to end (tiny models, CPU) and writes the result shape ARCHITECTURE.md asks for.

The smoke run goes through every path the GPU run takes: the stage on chunks with a real
face and speech, the model parts, and the LongLive engine loop (tiny DiT + tiny TAE) alone,
with the stage in series and pipelined on it. Its numbers mean nothing (a loaded 2-core box);
the GPU command and what it prints are in docs/lipsync.md.
"""

import json
import os
import subprocess
import sys

import pytest

from paths import REPO

pytestmark = pytest.mark.slow


def test_benchmark_smoke_writes_result_json(tmp_path):
    out = tmp_path / "lipsync.json"
    env = {"PERSONA_COMMIT": "test", "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", ""),
           "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "lipsync.py"), "--smoke", "--with-longlive", "--out", str(out)],
        capture_output=True, text=True, timeout=280, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert {"benchmark", "device", "torch", "commit", "dirty", "date", "config", "metrics"} <= set(record)
    assert record["benchmark"] == "lipsync" and record["commit"] == "test" and record["config"]["preset"] == "tiny"
    stage = record["metrics"]["stage"]
    assert stage["frames_synced"] > 0 and stage["chunk_ms_p50"] > 0 and stage["ms_per_frame_p50"] > 0
    for part in ("vae_encode", "unet", "vae_decode", "whisper_window"):
        assert stage[f"{part}_ms_p50"] > 0
    beside = record["metrics"]["with_longlive"]
    assert beside["fps_alone"] > 0 and beside["fps_serial"] > 0 and beside["fps_pipelined"] > 0
    assert beside["added_latency_ms_serial_p50"] > 0 and beside["added_latency_ms_pipelined_p95"] > 0
    assert beside["frames_synced"] > 0  # the pasted face was found in the engine's frames and re-drawn
