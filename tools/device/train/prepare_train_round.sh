#!/usr/bin/env bash
# Prepare the checkout that the device tool sends for issue 17's GPU training round (run HERE, in the
# session's own checkout root, with PyPI reachable):
#   bash tools/device/train/prepare_train_round.sh
# then ONE device call:
#   run(command="bash tools/device/train/h200_train_round.sh", carry=[".whl", ".devdata"], timeout_s=600)
# and afterwards, whatever the call returned:
#   bash tools/device/train/prepare_train_round.sh --restore
#
# Why the untracking: the tracked tree is ~54 MiB, 32 of them the LDM (bench/priors/ldm_sr_tiny), and the
# 1000 training images (20 MiB) + wheels (7.5 MiB) would not fit the tool's 64 MiB. The round retrains that
# LDM from scratch, so it does not need to travel: it is removed from git's INDEX only (git rm --cached;
# the files stay on disk) and git-excluded, which is what keeps a path out of the copy the tool sends
# (tracked + untracked-not-ignored files travel). --restore puts it back in the index and drops the exclude.
set -euo pipefail
LDM=bench/priors/ldm_sr_tiny
EXCL=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCL")"
if [ "${1:-}" = --restore ]; then
  sed -i "\#^/$LDM/\$#d" "$EXCL"
  git reset -q -- "$LDM"
  git diff --quiet HEAD -- "$LDM" && echo "restored: $LDM is tracked again and unchanged" \
    || echo "restored the index; $LDM differs from HEAD (new weights from the round?): git diff --stat $LDM"
  exit 0
fi
SHARED=${SHARED:-../shared/data/imagenet-sample-96}
[ -d "$SHARED" ] || { echo "no training images at $SHARED (set SHARED=...)" >&2; exit 1; }
grep -qxF /.devdata/ "$EXCL" 2>/dev/null || echo /.devdata/ >>"$EXCL"
bash tools/device/fetch_wheels.sh
rm -rf .devdata/imagenet-sample-96 && mkdir -p .devdata/imagenet-sample-96
cp "$SHARED"/*.png .devdata/imagenet-sample-96/
echo "images: $(ls .devdata/imagenet-sample-96 | wc -l) in .devdata/imagenet-sample-96 (all of $SHARED)"
grep -qxF "/$LDM/" "$EXCL" || echo "/$LDM/" >>"$EXCL"
git rm -r -q --cached --ignore-unmatch "$LDM"
echo "untracked for the call (index only, files kept): $LDM"
if ! bash tools/device/travel_size.sh .whl .devdata; then
  echo "too large even without $LDM; undo with: bash tools/device/train/prepare_train_round.sh --restore" >&2
  exit 1
fi
echo 'ready: run(command="bash tools/device/train/h200_train_round.sh", carry=[".whl", ".devdata"], timeout_s=600)'
echo 'then:  bash tools/device/train/prepare_train_round.sh --restore'
