#!/usr/bin/env bash
# The wheels the H200 image lacks (tools/device/README.md lists why each), for its Python 3.12, into .whl/
# of this checkout (git-excluded): used by tools/device/perf/prepare_device.sh and tools/device/train/prepare_train_round.sh.
# antlr4-python3-runtime 4.9.3 has no wheel on PyPI, so it is built here (pure Python).
set -euo pipefail
PY=${PY:-python3}
EXCL=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCL")"
grep -qxF /.whl/ "$EXCL" 2>/dev/null || echo /.whl/ >>"$EXCL"
WHEELS="diffusers==0.42.1 hydra-core==1.3.8 omegaconf==2.3.1 torch-fidelity==0.4.0 lpips==0.1.4
pytorch-pretrained-biggan==0.1.1 submitit==1.5.4 hydra-submitit-launcher==1.2.0 pypng==0.20220715.0"
mkdir -p .whl
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl $WHEELS
ls .whl/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1 || \
  $PY -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
echo "wheels: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1) in .whl/"
