#!/usr/bin/env bash
# Issue 16's GPU round in ONE device call (~9 minutes on one H200; see tools/device/README.md).
#
#   device:  bash tools/device/perf/h200_round.sh                  (after tools/device/perf/prepare_device.sh here;
#            run(command="bash tools/device/perf/h200_round.sh", carry=[".whl", ".devdata"], timeout_s=600))
#   CPU dry run of the same logic (adm_tiny, 32 px, few images, no compile, a test subset):
#            DRY_RUN=1 OUT=/tmp/round bash tools/device/perf/h200_round.sh
#
# Stages, each under `timeout` against one global DEADLINE (seconds after start), in priority order:
#   S0 setup: wheels from .whl into /tmp/site, a shim for boto3 (see device_shims/), environment, 512 images
#      made from the carried ImageNet-sample ones (4 lossless flips of each of 128) under /tmp/data512
#   T  the whole test suite in the background on cores 8-15 (pytest -n 6), timings on cores 0-7
#   S1 bench.perf, ADM-256 random weights, sr4, batch 32: DDRM 20 steps fp32 / bf16+cl+compile /
#      bf16+cl+compile+graph (+ the profile of both compiled modes), GDP-x0 20 steps, every other method of
#      conf/method/ that uses ${model} at 5 steps, bicubic
#   S3 harness overhead through the real CLI: random ADM-256 checkpoint, compiled bf16, 512 images,
#      writer thread on; bench.perf.overhead breakdown
#   S2 SRLDM 100 steps (CompVis shapes) fp32 / compile / compile+graph, DDRM-SRLDM 10 steps
#   S4 tools/device/perf/cuda_checks.py: ceilings, batch-size tolerance on CUDA, host syncs, the auto batch
#   S5 methods that back-propagate through the prior (if any), bf16+cl eager, batch 8, 5 steps
#   end: wait for the tests, write summary.md, tar the logs. $OUT gets at most 8 files.
set -u
T0=$(date +%s)
DRY=${DRY_RUN:-0}
OUT=${OUT:?set OUT (the device tool sets it)}
DEADLINE=${DEADLINE:-$([ "$DRY" = 1 ] && echo 1500 || echo 545)}
RESERVE=25                       # seconds kept for summary + tar
W=${WORK:-/tmp/bench_round}; LOG=$W/logs
rm -rf "$W"; mkdir -p "$LOG" "$OUT"
export PYTHONUNBUFFERED=1 BENCH_OFFLINE=1 HF_HUB_OFFLINE=1 BENCH_CACHE=$W/cache
PY=${PY:-python3}
. tools/device/round_lib.sh     # left, note, install_wheels, write_env
# stage NAME BUDGET CMD...: run CMD with at most BUDGET seconds (less if the deadline is nearer)
stage() {
  local name=$1 budget=$2; shift 2
  local l; l=$(( $(left) - RESERVE ))
  local b=$(( budget < l ? budget : l ))
  if (( b < 30 )); then note "SKIP $name (only ${l}s left)"; return 0; fi
  note "START $name (budget ${b}s)"
  local s; s=$(date +%s)
  timeout -k 5 "$b" "$@" >"$LOG/$name.log" 2>&1
  local rc=$?
  note "END $name rc=$rc in $(( $(date +%s) - s ))s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
  tail -n 25 "$LOG/$name.log"
  return 0
}

# ------------------------------------------------------------------------------------ S0 setup
install_wheels
$PY -c "import boto3" 2>/dev/null || export PYTHONPATH=$PYTHONPATH:$PWD/tools/device/perf/device_shims
write_env
if [ "$DRY" = 1 ]; then
  DEV=cpu; MODEL=adm_tiny; SIZE=32; BATCH=2; STEPS=2; FEW=1; SRSTEPS=2; LDM=tiny; NIMG=8
  MODES=fp32+cl+fused,fp32+cl+fused+graph; PMODES=$MODES; GMODES=fp32+cl; GBATCH=2
  TESTS="tests/test_batching.py"; PIN_T=""; PIN_P=""; XDIST=""
else
  DEV=cuda; MODEL=adm_imagenet256; SIZE=256; BATCH=32; STEPS=20; FEW=5; SRSTEPS=100; LDM=hub-shapes; NIMG=512
  MODES=bf16+cl+compile,bf16+cl+compile+graph; PMODES=$MODES; GMODES=bf16+cl; GBATCH=8
  TESTS=""; XDIST="-n 6"; $PY -c "import xdist" 2>/dev/null || XDIST=""
  if [ "$(nproc)" -ge 16 ]; then PIN_T="taskset -c 8-15"; PIN_P="taskset -c 0-7"; else PIN_T=""; PIN_P=""; fi
fi
SRC=.devdata/imagenet-sample-96; [ -d "$SRC" ] || SRC=../shared/data/imagenet-sample-96
$PY - "$SRC" "$W/data512" "$NIMG" <<'EOF' >"$LOG/data.log" 2>&1 || note "no images: harness stage will fail"
import sys
from pathlib import Path
from PIL import Image, ImageOps
src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dst.mkdir(parents=True, exist_ok=True)
files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
ops = [lambda im: im, ImageOps.mirror, ImageOps.flip, lambda im: im.rotate(180)]
k = 0
for op in ops:  # lossless variants: identity, left-right, top-bottom, 180 degrees
    for f in files:
        if k >= n:
            break
        op(Image.open(f).convert("RGB")).save(dst / f"{f.stem}_v{ops.index(op)}.png")
        k += 1
print(f"{k} images from {len(files)} in {src} -> {dst}")
EOF
cat "$LOG/data.log"
# method lists from conf/method (generic: methods added later appear without edits here)
read -r NOGRAD GRAD <<<"$($PY - <<'EOF'
from bench.perf.throughput import _backprops
from bench.perf.cells import method_names, method_spec
adm = [m for m in method_names() if method_spec(m)["model"]]
first = [m for m in ("ddrm", "gdp_x0") if m in adm]
nograd = first + [m for m in adm if m not in first and not _backprops(m)]
grad = [m for m in adm if _backprops(m)]
print(",".join(nograd) or "-", ",".join(grad) or "-")
EOF
)"
note "ADM methods without backprop: $NOGRAD; with backprop: $GRAD"
OTHERS=$(echo "$NOGRAD" | tr ',' '\n' | grep -v -x -E "ddrm|gdp_x0" | sed "s/$/=$FEW/" | paste -sd, -)

# ------------------------------------------------------------------------------------ T tests (background)
T_BUDGET=$(( $(left) - RESERVE - 10 ))
note "START tests in background (budget ${T_BUDGET}s)"
( OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout -k 5 "$T_BUDGET" $PIN_T $PY -m pytest -q $XDIST -p no:cacheprovider \
    --junitxml="$LOG/junit.xml" -rfEs $TESTS >"$LOG/tests.log" 2>&1; echo "rc=$?" >>"$LOG/tests.log" ) &
TESTS_PID=$!

# ------------------------------------------------------------------------------------ S1 ADM-256 methods
PERF="$PIN_P $PY -m bench.perf --device $DEV --model $MODEL --ldm $LDM --task sr4 --image-size $SIZE"
stage S1_adm $([ "$DRY" = 1 ] && echo 600 || echo 300) $PERF --methods "$NOGRAD,bicubic" --batch $BATCH \
  --steps $STEPS ${OTHERS:+--method-steps $OTHERS} --modes $MODES --fp32-methods ddrm --repeats 2 --warmup 1 \
  --warmup-seconds 0 --profile "$OUT/profile" --profile-modes $PMODES --out "$OUT/perf_adm256.json"

# ------------------------------------------------------------------------------------ S3 harness overhead
stage S3_harness 150 env PY=$PY $PIN_P bash tools/device/perf/harness_round.sh $MODEL $SIZE "$W/data512" $NIMG $BATCH \
  $DEV "$W/harness" "$OUT/harness.json"

# ------------------------------------------------------------------------------------ S2 SRLDM
stage S2_srldm 120 $PERF --methods srldm,ddrm_srldm --batch $BATCH --steps $SRSTEPS \
  --method-steps ddrm_srldm=$([ "$DRY" = 1 ] && echo 2 || echo 10) --modes $MODES \
  --fp32-methods srldm --repeats 2 --warmup 1 --warmup-seconds 0 --profile "$W/profile_ldm" \
  --profile-modes "${MODES##*,}" --out "$OUT/perf_srldm.json"

# ------------------------------------------------------------------------------------ S4 CUDA checks
stage S4_checks 90 $PIN_P $PY tools/device/perf/cuda_checks.py --out "$OUT/cuda_checks.json" --images "$W/data512" \
  $([ "$DRY" = 1 ] && echo --dry-run)

# ------------------------------------------------------------------------------------ S5 backprop methods
if [ "$GRAD" != "-" ]; then
  stage S5_backprop 90 $PERF --methods "$GRAD" --batch $GBATCH --steps $FEW --modes $GMODES --grad-modes $GMODES \
    --fp32-methods none --repeats 2 --warmup 1 --warmup-seconds 0 --out "$W/perf_backprop.json"
fi

# ------------------------------------------------------------------------------------ end
kill -0 $TESTS_PID 2>/dev/null && note "waiting for the tests (their timeout ends them before the deadline)"
wait $TESTS_PID 2>/dev/null
note "tests: $(grep -E 'passed|failed|error' "$LOG/tests.log" | tail -1) $(tail -1 "$LOG/tests.log")"
[ -f "$W/perf_backprop.json" ] && cp "$W/perf_backprop.json" "$LOG/"
[ -d "$W/profile_ldm" ] && cp -r "$W/profile_ldm" "$LOG/"
$PY tools/device/perf/summarize_round.py "$OUT" "$LOG" >"$OUT/summary.md" 2>"$LOG/summarize.err" || \
  note "summary failed: $(tail -1 "$LOG/summarize.err")"
tar -czf "$OUT/logs.tar.gz" -C "$W" logs
note "done; files in \$OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
cat "$OUT/summary.md" 2>/dev/null | head -60
