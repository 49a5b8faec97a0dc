#!/usr/bin/env bash
# Harness overhead through the real CLI (stage S3 of h200_round.sh):
#   bash tools/device/perf/harness_round.sh MODEL SIZE IMAGES_DIR N_IMAGES BATCH DEVICE WORKDIR OUT_JSON
# 1. random weights of conf/model/MODEL.yaml saved with torch.save (the checkpoint format the loader
#    reads; sha256 computed), 2. `python -m bench method=ddrm task=sr4` on N_IMAGES images upscaled to SIZE
#    with that checkpoint and the model's own speed block (adm_imagenet256: bf16 + channels_last + compile),
#    writer thread on, 3. `python -m bench.perf.overhead` on the run directory -> OUT_JSON.
set -eu
MODEL=$1 SIZE=$2 IMAGES=$3 NIMG=$4 BATCH=$5 DEV=$6 W=$7 OUTJ=$8
PY=${PY:-python3}
mkdir -p "$W"
$PY - "$MODEL" "$W/adm_random.pt" <<'EOF'
import hashlib, sys, time
import torch
from omegaconf import OmegaConf
from bench.models.adm_unet import create_model, random_init_
t0 = time.perf_counter()
cfg = OmegaConf.to_container(OmegaConf.load(f"conf/model/{sys.argv[1]}.yaml"), resolve=True)
net = random_init_(create_model(**cfg["arch"]), seed=0)
torch.save(net.state_dict(), sys.argv[2])
h = hashlib.sha256()
with open(sys.argv[2], "rb") as f:
    for block in iter(lambda: f.read(1 << 24), b""):
        h.update(block)
open(sys.argv[2] + ".sha256", "w").write(h.hexdigest())
print(f"random checkpoint {sys.argv[2]} sha256 {h.hexdigest()} ({time.perf_counter() - t0:.1f} s)")
EOF
SHA=$(cat "$W/adm_random.pt.sha256")
START=$(date +%s%N)
$PY -m bench method=ddrm task=sr4 model="$MODEL" \
  "model.asset={name:adm_random.pt,url:null,sha256:$SHA,path:$W/adm_random.pt}" \
  dataset=folder dataset.root="$IMAGES" dataset.image_size="$SIZE" dataset.allow_upscale=true \
  dataset.limit="$NIMG" run.batch_size="$BATCH" run.results_root="$W/results" run.progress=false run.device="$DEV"
echo "cli wall seconds (process start to exit): $(( ($(date +%s%N) - START) / 1000000 ))e-3"
RUN=$(dirname "$(find "$W/results" -name manifest.json | head -1)")
$PY -m bench.perf.overhead "$RUN" --out "$OUTJ"
