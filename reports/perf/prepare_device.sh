#!/usr/bin/env bash
# Prepare the checkout that the device tool sends (run HERE, in that checkout's root, with PyPI reachable):
#   bash reports/perf/prepare_device.sh            # N_IMAGES=128 by default
# then ONE device call:
#   run(command="bash reports/perf/h200_round.sh", carry=[".whl", ".devdata"], timeout_s=600)
#
# 1. ignores /.whl/ and /.devdata/ (git's info/exclude of this checkout);
# 2. .whl/: the wheels the H200 image lacks (reports/perf/README.md lists why each), for Python 3.12;
#    antlr4-python3-runtime 4.9.3 has no wheel on PyPI, so it is built here (pure Python);
# 3. .devdata/imagenet-sample-96/: the first N_IMAGES files of ../shared/data/imagenet-sample-96 (the
#    device gets no ../shared); the round makes 4 lossless flips of each, i.e. 512 images from 128;
# 4. prints what would travel and fails when it exceeds the tool's 64 MiB.
set -euo pipefail
N_IMAGES=${N_IMAGES:-128}
SHARED=${SHARED:-../shared/data/imagenet-sample-96}
PY=${PY:-python3}
EXCL=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCL")"
for p in /.whl/ /.devdata/; do grep -qxF "$p" "$EXCL" 2>/dev/null || echo "$p" >>"$EXCL"; done

WHEELS="diffusers==0.42.1 hydra-core==1.3.8 omegaconf==2.3.1 torch-fidelity==0.4.0 lpips==0.1.4
pytorch-pretrained-biggan==0.1.1 submitit==1.5.4 hydra-submitit-launcher==1.2.0 pypng==0.20220715.0"
mkdir -p .whl
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl $WHEELS
ls .whl/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1 || \
  $PY -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3

mkdir -p .devdata/imagenet-sample-96
find "$SHARED" -maxdepth 1 -type f -name '*.png' | sort | head -n "$N_IMAGES" | xargs -I{} cp {} .devdata/imagenet-sample-96/
echo "images: $(ls .devdata/imagenet-sample-96 | wc -l) in .devdata/imagenet-sample-96"

tree_bytes=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true; } \
  | awk '{s+=$1} END {print s+0}')
carry_bytes=$(du -sb .whl .devdata | awk '{s+=$1} END {print s}')
total=$(( tree_bytes + carry_bytes ))
echo "would travel: tree $(( tree_bytes / 1048576 )) MiB + carry $(( carry_bytes / 1048576 )) MiB = $(( total / 1048576 )) MiB (limit 64 MiB)"
if (( total > 64 * 1048576 )); then
  echo "too large: lower N_IMAGES (now $N_IMAGES), or drop wheels whose tests may skip (see reports/perf/README.md)" >&2
  exit 1
fi
echo 'ready: run(command="bash reports/perf/h200_round.sh", carry=[".whl", ".devdata"], timeout_s=600)'
