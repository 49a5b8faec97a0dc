#!/usr/bin/env bash
# The studies behind the shipped presets of the embedded prior (tuned/adm64_imagenet96/): every diffusion
# solver x {sr4, deblur_gauss, inpaint, denoise} at the given step budgets, one `python -m bench.tune` per cell,
# on the validation split sample_val (4 of its 11 photos), 8 trials (4 random, then TPE), median pruning after
# the first image, objective PSNR. Sequential on purpose: one study at a time keeps TPE's order, and so the
# preset, reproducible; on 2 CPU cores two 1-thread processes were not faster than one 2-thread one.
# Studies and trial runs go to results/.tune and results/sample_val; a rerun continues each study.
#   bash tools/tune/embedded_presets.sh 20            # the 20-step presets
#   METHODS="ddrm diffpir" bash tools/tune/embedded_presets.sh 100
set -u
cd "$(dirname "$0")/../.."
STEPS="${*:-20}"
METHODS="${METHODS:-ddrm ddnm ddnm_plus diffpir red_diff pigdm dps gdp_x0 gdp_xt}"
TASKS="${TASKS:-sr4 deblur_gauss inpaint denoise}"
TRIALS="${TRIALS:-8}"
IMAGES="${IMAGES:-4}"
for steps in $STEPS; do
  for task in $TASKS; do
    for method in $METHODS; do
      if [ "$method" = ddnm ] && [ "$task" = denoise ]; then
        echo "[embedded_presets] skip ddnm x denoise: DDNM is noise-free (ddnm_plus handles sigma_y > 0)"; continue
      fi
      start=$(date +%s)
      python -m bench.tune method="$method" task="$task" steps="$steps" tune.trials="$TRIALS" \
        tune.images="$IMAGES" tune.output=tuned
      echo "[embedded_presets] $method x $task @ $steps: rc $? in $(( $(date +%s) - start )) s"
    done
  done
done
