#!/usr/bin/env bash
# The lip-sync GPU runs (one H100; random weights at the real size), each writing one result file:
#   stage         the stage alone at 480x832 (ms per frame, model parts, peak memory)
#   longlive      beside the LongLive loop as the 41 fps engine runs (compiled, FP8 block linears, TAE):
#                 fps alone / serial / pipelined, speech->mouth latency added
#   longlive-ref  the same with one reference face per chunk (one VAE encode per chunk)
#   longlive-taesd-compiled-detect12  the fastest setting: TAESD, the stage compiled, detection every 12th frame
# Usage: benchmarks/lipsync_gpu.sh [OUT_DIR]   (default benchmarks/results). On a machine without git,
# export PERSONA_COMMIT / PERSONA_DIRTY first (`python -c "import sys; sys.path.insert(0, 'benchmarks');
# import record; print(record.provenance_env())"` on the checkout that was sent).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
py="${PYTHON:-python}"
mkdir -p "$out"
card="$("$py" -c 'import torch; n = torch.cuda.get_device_name(); print("h200" if "H200" in n else "h100" if "H100" in n else "gpu")')"
day="$(date -u +%F)"
"$py" benchmarks/lipsync.py --out "$out/lipsync-$card-$day-stage.json"
"$py" benchmarks/lipsync.py --with-longlive --compile --linear fp8 --out "$out/lipsync-$card-$day-longlive.json"
"$py" benchmarks/lipsync.py --with-longlive --compile --linear fp8 --reference chunk \
  --out "$out/lipsync-$card-$day-longlive-ref.json"
"$py" benchmarks/lipsync.py --with-longlive --compile --linear fp8 --autoencoder taesd --compile-stage \
  --detect-every 12 --detector-threads 4 --out "$out/lipsync-$card-$day-longlive-taesd-compiled-detect12.json"
