# Shared by the device rounds (tools/device/perf/h200_round.sh, tools/device/train/h200_train_round.sh); sourced, not run.
# The caller sets T0 (start, epoch seconds), DEADLINE (seconds after T0), LOG (a folder) and PY.
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
note() { echo "[round $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG/stages.txt"; }
# install_wheels: the carried .whl/*.whl into /tmp/site (packages the device image lacks) and PYTHONPATH to it
# and the checkout; without .whl, the checkout alone
install_wheels() {
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      >"$LOG/pip.log" 2>&1 || note "pip install failed (see pip.log)"
    export PYTHONPATH=/tmp/site:$PWD
  else
    export PYTHONPATH=$PWD
  fi
}
# write_env: GPU, Python, torch + CUDA, the packages the rounds use, cores -> $LOG/env.txt (first lines shown)
write_env() {
  { nvidia-smi 2>&1 | head -15; $PY -c "import torch, sys; print(sys.version); print('torch', torch.__version__, \
    'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))"; \
    $PY -m pip list 2>/dev/null | grep -i -E "^(torch|triton|diffusers|hydra|omegaconf|pytest|pytorch-pretrained)"; \
    nproc; } >"$LOG/env.txt" 2>&1
  head -5 "$LOG/env.txt"
}
