#!/usr/bin/env bash
# Issue 17's GPU training round in ONE device call (~9 minutes on one H200; see tools/device/README.md).
#
#   device:  bash tools/device/train/h200_train_round.sh      (after tools/device/train/prepare_train_round.sh here;
#            run(command="bash tools/device/train/h200_train_round.sh", carry=[".whl", ".devdata"], timeout_s=600))
#   CPU dry run of the same logic (the trainers' small default architectures, seconds of training, on a
#   copy of this checkout so the shipped priors are never overwritten):
#            DRY_RUN=1 OUT=/tmp/train_round bash tools/device/train/h200_train_round.sh
#
# Stages against one DEADLINE (seconds after start):
#   S0 wheels from .whl into /tmp/site, environment; the carried images linked where the trainers' default
#      data_root (../shared/data/imagenet-sample-96) looks, so the cards record the usual path
#   S1 both trainers at once on the GPU, each time-boxed by its own max_minutes (they checkpoint and export
#      when the time is up): the LDM-SR (VQ stage 1 from scratch with the codebook care, then the UNet on
#      its latents) and the DGP GAN (pure GAN, twice the shipped width); exports go to bench/priors of this
#      (throwaway) copy, the GAN's sha256 is pinned into conf/method/dgp.yaml
#   S2 evaluation with the new priors: tests/test_embedded_prior.py -k "dgp or srldm" on the CPU (the
#      strict xfails XPASS, i.e. fail, when a target is met) and, on the GPU, the CLI sweep
#      method=bicubic,srldm,dgp x task=sr4,inpaint on the 8 sample photos + bench.report
#   end: the new priors as priors.tar.gz split into 15 MiB parts (the tool returns files <= 16 MiB), the
#      report, summary.md and logs.tar.gz: at most 8 files in $OUT.
set -u
T0=$(date +%s)
DRY=${DRY_RUN:-0}
OUT=${OUT:?set OUT (the device tool sets it)}
DEADLINE=${DEADLINE:-$([ "$DRY" = 1 ] && echo 1800 || echo 560)}
RESERVE=20                       # seconds kept for packing
W=${WORK:-/tmp/bench_train_round}; LOG=$W/logs
rm -rf "$W"; mkdir -p "$LOG" "$OUT"
export PYTHONUNBUFFERED=1 BENCH_OFFLINE=1 HF_HUB_OFFLINE=1 BENCH_CACHE=$W/cache
PY=${PY:-python3}
. tools/device/round_lib.sh     # left, note, install_wheels, write_env (run from the checkout root)

DATA=$PWD/.devdata/imagenet-sample-96
[ -d "$DATA" ] || DATA=$(cd ../shared/data/imagenet-sample-96 2>/dev/null && pwd) || DATA=""
if [ "$DRY" = 1 ]; then  # work on a copy: the exports below overwrite bench/priors and conf/method/dgp.yaml
  mkdir -p "$W/repo"
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - 2>/dev/null | tar -xf - -C "$W/repo"
  [ -d .whl ] && cp -r .whl "$W/repo/"
  cd "$W/repo" || exit 1
fi

# ------------------------------------------------------------------------------------ S0 setup
install_wheels
write_env
DATA_ARG=""
if [ -z "$DATA" ]; then
  note "no training images (.devdata/imagenet-sample-96 or ../shared/data/imagenet-sample-96): nothing to train"
elif [ "$(cd ../shared/data/imagenet-sample-96 2>/dev/null && pwd -P)" != "$(cd "$DATA" && pwd -P)" ]; then
  { mkdir -p ../shared/data && ln -sfn "$DATA" ../shared/data/imagenet-sample-96; } 2>/dev/null \
    || DATA_ARG="data_root=$DATA"
fi
note "training images: $(ls "$DATA" 2>/dev/null | wc -l) from $DATA ${DATA_ARG:+(passed as $DATA_ARG)}"

if [ "$DRY" = 1 ]; then
  DEV=cpu; TRAIN_MIN=0.4; VQ_MIN=0.2
  LDM_ARGS="batch_size=8 num_threads=1"
  GAN_ARGS="batch_size=8 num_threads=1"
  SWEEP_LIMIT=2
else
  DEV=cuda; TRAIN_MIN=${TRAIN_MIN:-6}; VQ_MIN=${VQ_MIN:-3}
  # the LDM card's GPU command (bench/priors/ldm_sr_tiny.md), stage 1 warm-up shortened to fit VQ_MIN
  LDM_ARGS="'vq.block_out_channels=[64,128,128]' vq.layers_per_block=2 vq.norm_num_groups=32 \
vq.num_vq_embeddings=8192 'unet.block_out_channels=[64,128,192]' unet.layers_per_block=2 \
'unet.down_block_types=[DownBlock2D,AttnDownBlock2D,AttnDownBlock2D]' \
'unet.up_block_types=[AttnUpBlock2D,AttnUpBlock2D,UpBlock2D]' batch_size=128 vq_lr=5e-4 vq_warmup=200 \
restart_every=50 unet_lr=3e-4 warmup=200 ema_decay=0.9995 vq_steps=20000 unet_steps=50000 num_threads=null"
  # the GAN card's GPU command (bench/priors/biggan64_imagenet96.md)
  GAN_ARGS="generator.channel_width=${GAN_WIDTH:-32} d_channels=${GAN_WIDTH:-32} batch_size=64 steps=100000 \
num_threads=null"
  SWEEP_LIMIT=8
fi

# ------------------------------------------------------------------------------------ S1 training
if [ -n "$DATA" ]; then
  note "START S1: LDM-SR (stage 1 ${VQ_MIN} min of ${TRAIN_MIN}) and GAN (${TRAIN_MIN} min) at once on $DEV"
  S1_BUDGET=$(( $(left) - RESERVE - 60 ))
  eval "timeout -k 10 $S1_BUDGET $PY -m bench.train --config-name ldm_sr $LDM_ARGS $DATA_ARG device=$DEV \
    ckpt_dir=$W/ckpt_ldm ckpt_every=2000 vq_max_minutes=$VQ_MIN max_minutes=$TRAIN_MIN progress=false" \
    >"$LOG/train_ldm.log" 2>&1 &
  LDM_PID=$!
  eval "timeout -k 10 $S1_BUDGET $PY -m bench.train --config-name gan64 $GAN_ARGS $DATA_ARG device=$DEV \
    ckpt_dir=$W/ckpt_gan ckpt_every=2000 max_minutes=$TRAIN_MIN progress=false" >"$LOG/train_gan.log" 2>&1 &
  GAN_PID=$!
  wait $LDM_PID; LDM_RC=$?; wait $GAN_PID; GAN_RC=$?
  note "END S1: LDM rc=$LDM_RC, GAN rc=$GAN_RC"
  tail -n 8 "$LOG/train_ldm.log" "$LOG/train_gan.log"
  GAN=bench/priors/biggan64_imagenet96.safetensors
  if [ "$GAN_RC" = 0 ] && [ -f "$GAN" ]; then
    SHA=$(sha256sum "$GAN" | cut -d' ' -f1)
    sed -i -E "s/(sha256: )[0-9a-f]{64}/\1$SHA/" conf/method/dgp.yaml
    note "GAN sha256 $SHA pinned in conf/method/dgp.yaml (this copy)"
  fi
fi

# ------------------------------------------------------------------------------------ S2 evaluation
B=$(( $(left) - RESERVE ))
if (( B > 40 )); then
  note "START S2 (budget ${B}s): embedded-prior tests on the CPU, CLI sweep on $DEV"
  ( OMP_NUM_THREADS=4 timeout -k 5 "$B" $PY -m pytest -q -p no:cacheprovider -rxXfEs \
      tests/test_embedded_prior.py -k "dgp or srldm" >"$LOG/tests.log" 2>&1; echo "rc=$?" >>"$LOG/tests.log" ) &
  TESTS_PID=$!
  timeout -k 5 "$B" $PY -m bench -m method=bicubic,srldm,dgp task=sr4,inpaint dataset.limit=$SWEEP_LIMIT \
    run.device=$DEV run.results_root="$W/results" hydra.sweep.dir="$W/multirun" run.progress=false \
    >"$LOG/sweep.log" 2>&1
  note "sweep rc=$?"
  timeout -k 5 60 $PY -m bench.report --results "$W/results" --name train_round --out "$W/reports" \
    >"$LOG/report.log" 2>&1 && cp "$W/reports/train_round/README.md" "$OUT/report.md"
  wait $TESTS_PID
  note "tests: $(grep -E 'passed|failed|error' "$LOG/tests.log" | tail -1) $(tail -1 "$LOG/tests.log")"
else
  note "SKIP S2 (only ${B}s left)"
fi

# ------------------------------------------------------------------------------------ end
FILES=$(ls -d bench/priors/ldm_sr_tiny bench/priors/ldm_sr_tiny*.md bench/priors/ldm_sr_tiny*.png \
  bench/priors/biggan64_imagenet96* conf/method/dgp.yaml 2>/dev/null)
# shellcheck disable=SC2086
tar -czf "$W/priors.tar.gz" $FILES && (cd "$W" && sha256sum priors.tar.gz >priors.tar.gz.sha256)
split -b 15m -d "$W/priors.tar.gz" "$OUT/priors.tar.gz.part"
{
  echo "# issue 17 training round: $(grep -m1 '^torch' "$LOG/env.txt" 2>/dev/null), $(date -u +%F)"
  echo; echo "priors.tar.gz sha256 $(cut -d' ' -f1 "$W/priors.tar.gz.sha256"), $(du -b "$W/priors.tar.gz" | cut -f1) bytes,"
  echo "parts: $(cd "$OUT" && ls priors.tar.gz.part* | tr '\n' ' ')"
  echo "unpack: cat priors.tar.gz.part* >priors.tar.gz && tar -xzf priors.tar.gz -C <checkout>"
  echo; echo '## stages'; echo '```'; cat "$LOG/stages.txt"; echo '```'
  for f in train_ldm train_gan; do echo; echo "## $f (last lines)"; echo '```'; tail -n 15 "$LOG/$f.log" 2>/dev/null; echo '```'; done
  echo; echo '## cards: evaluation lines'
  for c in bench/priors/ldm_sr_tiny.md bench/priors/biggan64_imagenet96.md; do
    echo; echo "$c:"; grep -E "^\| (stage 1|stage 2|codebook|first stage|steps|wall time|parameters) " "$c" 2>/dev/null \
      | grep -v "mean loss" | cut -c1-300
  done
  echo; echo '## tests/test_embedded_prior.py -k "dgp or srldm" (XPASS(strict) = a target met)'; echo '```'
  grep -E "PASS|FAIL|XFAIL|XPASS|passed|failed|rc=" "$LOG/tests.log" 2>/dev/null | cut -c1-300; echo '```'
} >"$OUT/summary.md"
tar -czf "$OUT/logs.tar.gz" -C "$W" logs
note "done; files in \$OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
head -40 "$OUT/summary.md"
