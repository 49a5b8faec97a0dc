#!/usr/bin/env bash
# Issue 12's observation, reproduced and fixed on the CPU (evidence: cpu_batch_independence.json):
#   DDRM deblur_gauss, 16 ImageNet-sample images at 64 px, the embedded prior, run.batch_size=1|2|4,
#   without and with model.speed.micro_batch=1; the restored PNGs are compared against batch 1.
#   bash tools/cpu_batch_independence.sh [RESULTS_DIR] [OUT_JSON]
set -eu
R=${1:-/tmp/bench_bi}; OUTJ=${2:-reports/perf/cpu_batch_independence.json}
PY=${PY:-python3}
DATA=${DATA:-../shared/data/imagenet-sample-96}
for mb in none 1; do
  for bs in 1 2 4; do
    extra=(); [ "$mb" = none ] || extra=("+model.speed.micro_batch=$mb")
    $PY -m bench method=ddrm task=deblur_gauss dataset=folder dataset.root="$DATA" dataset.limit=16 \
      dataset.image_size=64 run.batch_size=$bs run.results_root="$R/mb$mb/bs$bs" run.progress=false "${extra[@]}" \
      | grep -E "run |images_per_s"
  done
done
$PY - "$R" "$OUTJ" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
root, out = Path(sys.argv[1]), Path(sys.argv[2])
rec = {"command": "python -m bench method=ddrm task=deblur_gauss dataset=folder dataset.root=<imagenet-sample-96> "
                  "dataset.limit=16 dataset.image_size=64 run.batch_size=1|2|4 [+model.speed.micro_batch=1]",
       "compared_against": "run.batch_size=1 of the same setting", "results": []}
for mb in ("none", "1"):
    runs = {bs: next((root / f"mb{mb}" / f"bs{bs}").rglob("images")) for bs in (1, 2, 4)}
    for bs in (2, 4):
        files = sorted(p.name for p in runs[1].glob("*.png"))
        diffs = [np.abs(np.asarray(Image.open(runs[1] / f), dtype=int) - np.asarray(Image.open(runs[bs] / f), dtype=int))
                 for f in files]
        rec["results"].append({"micro_batch": None if mb == "none" else int(mb), "batch": bs, "images": len(files),
                               "images_differing": sum(int(d.max() > 0) for d in diffs),
                               "values_differing": int(sum((d > 0).sum() for d in diffs)),
                               "values": int(sum(d.size for d in diffs)),
                               "max_levels": int(max(d.max() for d in diffs))})
out.write_text(json.dumps(rec, indent=1) + "\n")
print(json.dumps(rec["results"], indent=1))
EOF
