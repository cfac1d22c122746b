#!/usr/bin/env bash
# The wave-2 GPU run: the CUDA tests and every engine measurement issue 15's "Must show" asks for,
# plus issue 13's interrupt latency, in two calls of at most 10 minutes on one H100.
#
#   bash benchmarks/gpu_wave2.sh part1    # CUDA tests; one stream with the defaults (no flags);
#                                         # paced 1, 2, 3 sessions at 480x832            (~9 min)
#   bash benchmarks/gpu_wave2.sh part2    # capacity: batched 1-4 sessions at 480x832 and 1-10 at
#                                         # 320x576 vs separate processes (and CUDA MPS where the
#                                         # machine has it); interrupt latency              (~10 min)
#   bash benchmarks/gpu_wave2.sh part3    # optional: one stream compiled with max-autotune (Triton FP8
#                                         # GEMMs autotuned against cuBLAS): its compile cost and speed
#   bash benchmarks/gpu_wave2.sh serving  # CUDA tests; batched capacity at both sizes and paced 1-3
#                                         # sessions at 480x832, no separate processes       (~8 min)
#   bash benchmarks/gpu_wave2.sh host-sync  # CUDA tests (lip-sync stage's too); one stream with the
#                                         # defaults, timesteps made per pass (a host sync each) vs
#                                         # cached, side by side; batched 1-3 and paced 1-2 at 480x832 (~8 min)
#   bash benchmarks/gpu_wave2.sh fill-graphs  # CUDA tests; one stream with the defaults, CUDA graphs off
#                                         # and on (the first chunk: launched vs replayed)     (~7 min)
#   bash benchmarks/gpu_wave2.sh queue-ahead  # paced 1-2 sessions at 480x832, the host queuing 2 ticks
#                                         # ahead of the GPU vs 1 (the default), side by side (~4 min)
#   bash benchmarks/gpu_wave2.sh recache-graphs  # CUDA tests; one stream with the defaults, CUDA graphs
#                                         # off and on (stock re-cache passes replayed too)   (~7 min)
#   bash benchmarks/gpu_wave2.sh paced    # paced 1-2 sessions at 480x832 with the defaults, 40 s each
#                                         # (PACED_SECONDS, PACED_LABEL to change them)        (~5 min)
#   bash benchmarks/gpu_wave2.sh flash    # CUDA tests (FlashAttention-4's too); one stream, dense attention
#                                         # on cuDNN vs FlashAttention-4 side by side (flash-attn-4 installed) (~8 min)
#   bash benchmarks/gpu_wave2.sh flash-serving  # batched 1-3 and paced 1-2 sessions at 480x832 with the
#                                         # defaults (flash-attn-4 installed: FlashAttention-4)  (~6 min)
#   bash benchmarks/gpu_wave2.sh wave7    # CUDA tests; batched 6 and 8 sessions at 320x576 and paced 1-2 at
#                                         # 480x832, each with chunks begun early to join a batch (prefetch) on vs off
#                                         # (flash-attn-4 installed)                          (~8 min)
#   bash benchmarks/gpu_wave2.sh wave8    # host CUDA tests; batches with holes replay a graph per row range:
#                                         # batched 8 at 320x576, paced 8 at 320x576 (prefetch off, on) and
#                                         # 1-2 at 480x832 (WAVE8_LABEL names the variant; flash-attn-4 installed) (~7 min)
#   bash benchmarks/gpu_wave2.sh attend-together  # CUDA tests (host, FlashAttention-4); sessions reading the same
#                                         # keys attending in one call vs a call each: the kernels alone
#                                         # (benchmarks/attention_batch.py) and batched 3 at 480x832 (~4 min)
#   bash benchmarks/gpu_wave2.sh attend-together-320  # the same for batched 8 at 320x576 (prefetch on); paced 1-2
#                                         # at 480x832 with the defaults (~4 min)
#   bash benchmarks/gpu_wave2.sh kernels  # CUDA tests (host, FlashAttention-4, FP8); the FFN's GELU kernel's row
#                                         # layouts (benchmarks/gelu_quantize.py); attention_batch.py and
#                                         # batched 3 at 480x832 attending together off/on (~7 min)
#   bash benchmarks/gpu_wave2.sh kernels-profile  # one stream at 480x832 profiled (idle gaps included), compiled
#                                         # with the engine's kernel tuning vs without (~7 min)
#   bash benchmarks/gpu_wave2.sh host-idle  # one stream at 480x832 with the defaults (chunks waited for vs
#                                         # back to back) and with persistent reductions, batched 3 (prefetch off, on) with the GPU's busy
#                                         # share, paced 1-2; the SM clock logged beside (~6 min)
#   bash benchmarks/gpu_wave2.sh paced-3  # host CUDA tests; paced 3 and 1 sessions at 480x832 (30 s each),
#                                         # after the warm-up captures every row range (~6 min)
#   bash benchmarks/gpu_wave2.sh paced-3-cadence  # paced 3 sessions at 480x832, 30 s with a directive every
#                                         # 1.5-3 s each, a blend re-caching the window once (the default) vs at
#                                         # each step; then one every 6-15 s (a chat's pace)  (~6 min)
#   bash benchmarks/gpu_wave2.sh capacity-320  # 8 sessions at 320x576: asking back to back, then paced 20 s,
#                                         # each with prefetch off (the default) and on        (~9 min)
#   bash benchmarks/gpu_wave2.sh persistent  # one stream at 480x832, the default compile vs every reduction
#                                         # in registers (--compile persistent; its compile is long) (~9 min)
#   bash benchmarks/gpu_wave2.sh kv-write # host CUDA tests; the KV window's writes as 8-byte words vs
#                                         # element by element, at LongLive's shapes (benchmarks/kv_write.py) (~1 min)
#   bash benchmarks/gpu_wave2.sh --smoke  # every step on CPU with tiny models (tests/test_longlive_gpu_script.py)
#
# Runs from a copy of the tree without .git or a venv: `comfyui_persona` is made importable from
# the tree by a symlink; record.py stamps PERSONA_COMMIT / PERSONA_DIRTY (export them). Needs
# python3 with torch; the paced/capacity/interrupt steps run real LongLiveBackend sessions and
# need pydantic: if `import pydantic` fails and .whl/ holds wheels, they are installed into a
# temporary folder first. Each step has its own time limit and writes its JSON as it goes, so an
# overrun loses that step's tail only. FlashAttention-4 travels as wheels: flash-attn-4, quack-kernels,
# apache-tvm-ffi, torch-c-dlpack-ext, einops, nvidia-cutlass-dsl and its -libs-base, -libs-core (the
# `cutlass` Python package) and -libs-cu13. The three libs wheels share the folder nvidia_cutlass_dsl/,
# and `pip install --target` keeps only the first wheel's copy of it (then `cutlass.cute` is missing
# and the engine falls back to cuDNN, which the result's `dense_attention` says): extract those three
# into the target with Python's zipfile (the device has no unzip), pip-install the rest, and put
# nvidia_cutlass_dsl/dsl_packages on PYTHONPATH; check `import flash_attn.cute` before the steps.
# Results: benchmarks/results/longlive*-<card>-<date>-wave[234]-*.json
# (with --smoke: $OUT/results/), copied to $OUT with each step's log and steps.txt (exit codes).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-part1}
OUT=${OUT:-/tmp/persona-gpu-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
: > "$OUT/steps.txt"
STARTED=$(mktemp)  # result files newer than this one are this call's

SITE=$(mktemp -d)
ln -s "$PWD" "$SITE/comfyui_persona"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pydantic" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
fi
HAVE_PYDANTIC=0
"$PY" -c "import pydantic" 2>/dev/null && HAVE_PYDANTIC=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/persona-inductor}
export PYTHONUNBUFFERED=1

cat > "$SITE/pytest.ini" <<INI
[pytest]
addopts = -ra -p no:cacheprovider --import-mode=importlib
pythonpath = $PWD/tests $PWD/benchmarks
markers =
    gpu: needs a CUDA GPU
    browser: drives Chromium
    comfyui: runs against a real ComfyUI tree
    slow: slow
INI

provenance() {  # provenance NAME: the raw log's first line (what tests/test_benchmark_results.py reads)
  "$PY" - "$1" "$MODE" <<'PYPROV'
import datetime, importlib.metadata, json, os, platform, subprocess, sys
step, mode = sys.argv[1], sys.argv[2]
try:  # without importing torch (seconds a step)
    torch_version = importlib.metadata.version("torch").split("+")[0]
except importlib.metadata.PackageNotFoundError:
    torch_version = "none"
try:
    device = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                            text=True, timeout=30).stdout.splitlines()[0].strip() or "cpu"
except (OSError, IndexError, subprocess.SubprocessError):
    device = "cpu"
dirty_env = os.environ.get("PERSONA_DIRTY", "")
dirty = False if dirty_env == "false" else (dirty_env if dirty_env.startswith("sha256:") else "sha256:unknown")
record = {"commit": os.environ.get("PERSONA_COMMIT", "unknown"), "dirty": dirty, "device": device,
          "torch": torch_version, "python": platform.python_version(), "date": datetime.date.today().isoformat()}
print(f"# provenance: raw output of step '{step}' of `bash benchmarks/gpu_wave2.sh {mode}`; "
      f"commit {record['commit']}, dirty {str(dirty).lower()}, device {device}, torch {torch_version}, "
      f"Python {record['python']}, date {record['date']}; record {json.dumps(record)}")
PYPROV
}

step() {  # step NAME LIMIT_S COMMAND...: run it, log to $OUT/NAME.log, record its exit code
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s)"
  local t0=$SECONDS
  provenance "$name" >"$OUT/$name.log" 2>&1
  timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $((SECONDS - t0)) s"
  tail -n 4 "$OUT/$name.log" | sed 's/^/   /'
  echo "$name $rc $((SECONDS - t0))" >>"$OUT/steps.txt"
}

needs_pydantic() {  # needs_pydantic NAME: false (and recorded) when pydantic is missing
  if [ "$HAVE_PYDANTIC" = 1 ]; then return 0; fi
  echo "== $1 skipped: no pydantic (carry its wheels in .whl/, see the header)"
  echo "$1 skipped-no-pydantic 0" >>"$OUT/steps.txt"
  return 1
}

BENCH=("$PY" benchmarks/longlive.py)
if [ "$MODE" = --smoke ]; then
  RES="$OUT/results"
  mkdir -p "$RES"
  SMOKE=(--smoke)
  step tests 300 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q tests/test_longlive_host.py -k "busy or leaving"
  step single 300 "${BENCH[@]}" "${SMOKE[@]}" --decoders tae --out "$RES/single.json"
  needs_pydantic paced && step paced 300 "${BENCH[@]}" "${SMOKE[@]}" --paced --sessions 1,2 --seconds 1.5 \
    --directive-every 0.5,1.0 --out "$RES/paced.json"
  needs_pydantic capacity && step capacity 300 "${BENCH[@]}" "${SMOKE[@]}" --capacity --interrupt --sessions 1,2 \
    --processes 1 --out "$RES/capacity.json"
elif [ "$MODE" = part1 ]; then
  step gpu-tests 240 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu \
    tests/test_longlive_host.py tests/test_longlive_fp8.py
  # No flags: the engine's defaults on this card (compile, FP8 on Hopper+, CUDA graphs, TAE).
  step single-defaults 290 "${BENCH[@]}" --sizes 480x832 --decoders tae --label wave2-defaults
  needs_pydantic paced-480 && step paced-480 330 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2,3 \
    --seconds 25 --label wave2-paced-480
elif [ "$MODE" = part2 ]; then
  needs_pydantic capacity-480 && step capacity-480 320 "${BENCH[@]}" --capacity --interrupt --sizes 480x832 \
    --sessions 1,2,3,4 --processes 2,3 --label wave2-capacity-480
  needs_pydantic capacity-320 && step capacity-320 270 "${BENCH[@]}" --capacity --sizes 320x576 \
    --sessions 1,2,4,6,8,10 --processes 4,8 --label wave2-capacity-320
elif [ "$MODE" = serving ]; then
  step gpu-tests 90 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu \
    tests/test_longlive_host.py tests/test_longlive_fp8.py
  needs_pydantic capacity-480 && step capacity-480 150 "${BENCH[@]}" --capacity --sizes 480x832 \
    --sessions 1,2,3,4 --label wave2-serving-capacity-480
  needs_pydantic capacity-320 && step capacity-320 170 "${BENCH[@]}" --capacity --sizes 320x576 \
    --sessions 1,4,8,10 --label wave2-serving-capacity-320
  needs_pydantic paced-480 && step paced-480 170 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2,3 \
    --seconds 20 --label wave2-serving-paced-480
elif [ "$MODE" = host-sync ]; then
  step gpu-tests 150 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu \
    tests/test_longlive_host.py tests/test_longlive_fp8.py tests/test_lipsync_stage.py
  step single-defaults 300 "${BENCH[@]}" --sizes 480x832 --decoders tae --timesteps both --switches 4 \
    --label wave3-host-sync
  needs_pydantic capacity-480 && step capacity-480 150 "${BENCH[@]}" --capacity --sizes 480x832 \
    --sessions 1,2,3 --label wave3-host-sync-capacity-480
  needs_pydantic paced-480 && step paced-480 130 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --seconds 20 --label wave3-host-sync-paced-480
elif [ "$MODE" = fill-graphs ]; then
  step gpu-tests 120 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu \
    tests/test_longlive_host.py tests/test_longlive_fp8.py
  step single-defaults 270 "${BENCH[@]}" --sizes 480x832 --decoders tae --switches 4 --chunks 12 \
    --cuda-graphs both --label wave4-fill-graphs
elif [ "$MODE" = queue-ahead ]; then
  # PACED_SECONDS=40 for a longer run (about twice the directives), labelled -long
  PACED_SECONDS=${PACED_SECONDS:-20}
  needs_pydantic paced-480 && step paced-480 560 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --queue-ahead 2,1 --seconds "$PACED_SECONDS" \
    --label "wave4-queue-ahead-paced-480$([ "$PACED_SECONDS" = 20 ] || echo -long)"
elif [ "$MODE" = recache-graphs ]; then
  step gpu-tests 120 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu \
    tests/test_longlive_host.py tests/test_longlive_fp8.py
  step single-defaults 300 "${BENCH[@]}" --sizes 480x832 --decoders tae --switches 4 --chunks 12 \
    --cuda-graphs both --label wave5-recache-graphs
elif [ "$MODE" = paced ]; then
  needs_pydantic paced-480 && step paced-480 560 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --seconds "${PACED_SECONDS:-40}" --label "${PACED_LABEL:-wave5-paced-480}"
elif [ "$MODE" = flash ]; then
  step gpu-tests 150 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu \
    tests/test_attention_flash.py tests/test_longlive_host.py tests/test_longlive_fp8.py
  step single-defaults 360 "${BENCH[@]}" --sizes 480x832 --decoders tae --switches 4 --chunks 12 \
    --attention-kernel cudnn,flash --label wave6-flash
elif [ "$MODE" = flash-serving ]; then
  needs_pydantic capacity-480 && step capacity-480 200 "${BENCH[@]}" --capacity --sizes 480x832 \
    --sessions 1,2,3 --label wave6-flash-capacity-480
  needs_pydantic paced-480 && step paced-480 300 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --seconds "${PACED_SECONDS:-40}" --label wave6-flash-paced-480
elif [ "$MODE" = wave7 ]; then
  step gpu-tests 150 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu \
    tests/test_attention_flash.py tests/test_longlive_host.py tests/test_longlive_fp8.py
  needs_pydantic capacity-320 && step capacity-320 200 "${BENCH[@]}" --capacity --sizes 320x576 \
    --sessions 6,8 --prefetch on,off --label wave7-fixes-capacity-320
  needs_pydantic paced-480 && step paced-480 300 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --prefetch on,off --seconds "${PACED_SECONDS:-30}" --label wave7-fixes-paced-480
elif [ "$MODE" = wave8 ]; then
  step gpu-tests 80 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu tests/test_longlive_host.py
  needs_pydantic capacity-320 && step capacity-320 120 "${BENCH[@]}" --capacity --sizes 320x576 \
    --sessions 8 --label "wave8-${WAVE8_LABEL:-spans}-capacity-320"
  needs_pydantic paced-320 && step paced-320 130 "${BENCH[@]}" --paced --sizes 320x576 --sessions 8 \
    --prefetch off,on --seconds 20 --label "wave8-${WAVE8_LABEL:-spans}-paced-320"
  needs_pydantic paced-480 && step paced-480 120 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --seconds 20 --label "wave8-${WAVE8_LABEL:-spans}-paced-480"
elif [ "$MODE" = attend-together ]; then
  step gpu-tests 200 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu tests/test_longlive_host.py \
    tests/test_attention_flash.py
  step attention-batch 90 "$PY" benchmarks/attention_batch.py --out "$OUT"
  needs_pydantic capacity-480 && step capacity-480 240 "${BENCH[@]}" --capacity --sizes 480x832 --sessions 3 \
    --attend-together off,on --label "wave9-attend-together-capacity-480"
elif [ "$MODE" = attend-together-320 ]; then
  needs_pydantic capacity-320 && step capacity-320 270 "${BENCH[@]}" --capacity --sizes 320x576 --sessions 8 \
    --attend-together off,on --prefetch on --label "wave9-attend-together-capacity-320"
  needs_pydantic paced-480 && step paced-480 200 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --seconds 20 --label "wave9-attend-together-paced-480"
elif [ "$MODE" = kernels ]; then
  step gpu-tests 150 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu tests/test_longlive_host.py \
    tests/test_attention_flash.py tests/test_longlive_fp8.py
  step gelu-quantize 60 "$PY" benchmarks/gelu_quantize.py --out "$OUT"
  step attention-batch 90 "$PY" benchmarks/attention_batch.py --out "$OUT"
  needs_pydantic capacity-480 && step capacity-480 240 "${BENCH[@]}" --capacity --sizes 480x832 --sessions 3 \
    --attend-together off,on --label "wave10-attend-together-capacity-480"
elif [ "$MODE" = kernels-profile ]; then
  step single-profile 400 "${BENCH[@]}" --sizes 480x832 --decoders tae --chunks 12 --switches 2 --profile \
    --compile default,untuned --label wave10-profile
  # Inductor's generated source of the norm + modulation + quantisation kernels, to read
  find "${TORCHINDUCTOR_CACHE_DIR:-$HOME/.cache/comfyui-persona/inductor}" -name '*.py' \
    -exec grep -l 'native_layer_norm' {} + 2>/dev/null | head -40 | tar czf "$OUT/inductor-norm-kernels.tgz" -T - 2>/dev/null
elif [ "$MODE" = host-idle ]; then
  # the SM clock and power once a second beside the runs: a slower pass is the host or the card
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv -lms 1000 > "$OUT/clocks.csv" 2>&1 &
  CLOCKS=$!
  step single-defaults 240 "${BENCH[@]}" --sizes 480x832 --decoders tae --chunks 12 --switches 2 \
    --compile default,persistent --label wave10-host-idle
  needs_pydantic capacity-480 && step capacity-480 200 "${BENCH[@]}" --capacity --sizes 480x832 --sessions 3 \
    --prefetch off,on --label "wave10-host-idle-capacity-480"
  needs_pydantic paced-480 && step paced-480 150 "${BENCH[@]}" --paced --sizes 480x832 --sessions 1,2 \
    --seconds 20 --label "wave10-host-idle-paced-480"
  kill "$CLOCKS" 2>/dev/null
elif [ "$MODE" = paced-3 ]; then
  step gpu-tests 120 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu tests/test_longlive_host.py
  needs_pydantic paced-480 && step paced-480 330 "${BENCH[@]}" --paced --sizes 480x832 --sessions 3,1 \
    --seconds 30 --label "wave11-paced-3-480"
elif [ "$MODE" = paced-3-cadence ]; then
  needs_pydantic paced-480 && step paced-480 280 "${BENCH[@]}" --paced --sizes 480x832 --sessions 3 \
    --blend-recache last,each --seconds 30 --label "wave12-paced-3-480"
  needs_pydantic paced-480-chat && step paced-480-chat 170 "${BENCH[@]}" --paced --sizes 480x832 --sessions 3 \
    --seconds 30 --directive-every 6,15 --label "wave12-chat-pace-paced-3-480"
elif [ "$MODE" = capacity-320 ]; then
  # the warm-up alone took 130-190 s at d31462f: 330 s fits it and both runs
  needs_pydantic capacity-320 && step capacity-320 330 "${BENCH[@]}" --capacity --sizes 320x576 --sessions 8 \
    --prefetch off,on --label "wave12-capacity-320"
  needs_pydantic paced-320 && step paced-320 200 "${BENCH[@]}" --paced --sizes 320x576 --sessions 8 \
    --prefetch off,on --seconds 20 --label "wave12-paced-320"
elif [ "$MODE" = persistent ]; then
  step single-defaults 560 "${BENCH[@]}" --sizes 480x832 --decoders tae --chunks 12 --switches 2 --no-decode \
    --compile default,persistent --label wave11-persistent
elif [ "$MODE" = kv-write ]; then
  step gpu-tests 80 "$PY" -m pytest -c "$SITE/pytest.ini" --rootdir . -q -s -m gpu tests/test_longlive_host.py
  step kv-write 60 "$PY" benchmarks/kv_write.py --out "$OUT"
elif [ "$MODE" = part3 ]; then
  step max-autotune 560 "${BENCH[@]}" --sizes 480x832 --decoders tae --compile max-autotune-no-cudagraphs \
    --chunks 12 --switches 3 --label wave2-max-autotune
else
  echo "usage: $0 part1 | part2 | serving | host-sync | fill-graphs | queue-ahead | recache-graphs | paced | flash | flash-serving | wave7 | wave8 | attend-together | attend-together-320 | kernels | kernels-profile | host-idle | paced-3 | paced-3-cadence | capacity-320 | persistent | kv-write | part3 | --smoke" >&2
  exit 2
fi

if [ "$MODE" != --smoke ]; then
  find benchmarks/results -maxdepth 1 -name 'longlive*.json' -newer "$STARTED" -exec cp {} "$OUT"/ \;
fi
"$PY" - "$OUT" <<'PYSUM'
import glob, json, os, sys
out = sys.argv[1]
lines = []
for path in sorted(glob.glob(os.path.join(out, "*.json")) + glob.glob(os.path.join(out, "results", "*.json"))):
    rec = json.load(open(path))
    m = rec.get("metrics", {})
    head = f"{os.path.basename(path)}: {rec.get('device')} commit {rec.get('commit')} dirty {rec.get('dirty')}"
    lines.append(head)
    for run in m.get("runs", []):
        eng = run.get("engine", {})
        lines.append(f"  {run.get('height')}x{run.get('width')} {run.get('linear')} compile={run.get('compile')} "
                     f"graphs={run.get('cuda_graphs')} timesteps={run.get('timesteps')} attention={run.get('dense_attention')}: "
                     f"chunk {run.get('chunk_ms_p50')} ms, DiT {run.get('fps_video_dit_only')} fps, "
                     f"frames on host {eng.get('fps_video_frames_on_host')} fps, first chunk {eng.get('first_chunk_ms_p50')} ms, "
                     f"directive after {eng.get('directive_to_frames_ms_after_p50')} ms, "
                     f"batched-vs-alone {eng.get('batched_equals_alone_max_abs_diff')}, "
                     f"fp8 vs bf16 {run.get('fp8_vs_bf16')}, busy {run.get('profile', {}).get('gpu_busy_ms_per_chunk')} ms")
    for p in m.get("paced", []):
        lines.append(f"  paced {p['sessions']} @ queue_ahead {p.get('queue_ahead')} prefetch {p.get('prefetch', 'on')} @ {p['height']}x{p['width']}: received p50 "
                     f"{p['directive_to_first_changed_frame_received_ms_p50']} p95 "
                     f"{p['directive_to_first_changed_frame_received_ms_p95']} ms, fully new p50 "
                     f"{p['directive_to_fully_new_frame_received_ms_p50']} ms, real time {p['real_time']}, "
                     f"passes {p.get('directive_engine_passes')}, "
                     f"fps {[s['fps_video'] for s in p['per_session']]}")
    for c in m.get("capacity", []):
        lines.append(f"  batched {c['sessions']} prefetch {c.get('prefetch', 'on')} @ {c['height']}x{c['width']}: {c['fps_video_per_session_min']} fps "
                     f"per session (min), {c['fps_video_total']} total")
    for c in m.get("processes", []) + [x for x in m.get("mps", []) if "processes" in x]:
        lines.append(f"  processes {c['processes']} @ {c['height']}x{c['width']}: {c['fps_video_per_process_min']} "
                     f"fps per process (min), errors {len(c['errors'])}")
    for c in m.get("interrupt", []):
        lines.append(f"  interrupt @ {c['height']}x{c['width']}: p50 {c['interrupt_to_stop_ms_p50']} ms, max "
                     f"{c['interrupt_to_stop_ms_max']} ms, gaps {c['frame_gaps_after']}")
open(os.path.join(out, "summary.txt"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PYSUM
echo "== steps (name exit seconds)"
cat "$OUT/steps.txt"
