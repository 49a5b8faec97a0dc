#!/usr/bin/env bash
# Prepare the checkout that the device tool sends (run HERE, in that checkout's root, with PyPI reachable):
#   bash tools/device/perf/prepare_device.sh            # N_IMAGES=128 by default
# then ONE device call:
#   run(command="bash tools/device/perf/h200_round.sh", carry=[".whl", ".devdata"], timeout_s=600)
#
# 1. ignores /.whl/ and /.devdata/ (git's info/exclude of this checkout);
# 2. .whl/: the wheels the H200 image lacks, through tools/device/fetch_wheels.sh;
# 3. .devdata/imagenet-sample-96/: the first N_IMAGES files of ../shared/data/imagenet-sample-96 (the
#    device gets no ../shared); the round makes 4 lossless flips of each, i.e. 512 images from 128;
# 4. prints what would travel and fails when it exceeds the tool's 64 MiB.
set -euo pipefail
N_IMAGES=${N_IMAGES:-128}
SHARED=${SHARED:-../shared/data/imagenet-sample-96}
PY=${PY:-python3}
EXCL=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCL")"
grep -qxF /.devdata/ "$EXCL" 2>/dev/null || echo /.devdata/ >>"$EXCL"

bash tools/device/fetch_wheels.sh

rm -rf .devdata/imagenet-sample-96 && mkdir -p .devdata/imagenet-sample-96  # exactly N_IMAGES (the training round leaves 1000)
find "$SHARED" -maxdepth 1 -type f -name '*.png' | sort | head -n "$N_IMAGES" | xargs -I{} cp {} .devdata/imagenet-sample-96/
echo "images: $(ls .devdata/imagenet-sample-96 | wc -l) in .devdata/imagenet-sample-96"

if ! bash tools/device/travel_size.sh .whl .devdata; then
  echo "too large: lower N_IMAGES (now $N_IMAGES), or drop wheels whose tests may skip (see tools/device/README.md)" >&2
  exit 1
fi
echo 'ready: run(command="bash tools/device/perf/h200_round.sh", carry=[".whl", ".devdata"], timeout_s=600)'
