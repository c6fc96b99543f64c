#!/usr/bin/env bash
# The GPU checks of the speed and BlockSwap issues, in one go, for a machine with one CUDA GPU.
# Prints the machine and every figure; results go under ${OUT:-gpu-check}/ (outside the repo is better).
#   ZCBENCH_DATA=/path/to/data bash benchmarks/gpu_check.sh            # about 10 minutes on an H100/H200
#   QUICK=1 bash benchmarks/gpu_check.sh                               # a smoke run (minutes)
# Steps: (1) NB201 fisher on 1,000 archs, (2) NB201 with the classic proxies together on 200 archs,
# (3) 1,000 BlockSwap candidates (WRN-40-2, 800k), (4) the mini CIFAR BlockSwap comparison with more epochs,
# (5) the modern proxy too slow for the CPU (te_nas: one backward pass of the batch per sample, ~5.5 CPU-hours) on
#     the 1,000 NB201 archs of benchmarks/reproduce_modern.py. MODERN=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
WORKERS="${WORKERS:-4}"          # evaluator processes sharing the GPU: several architectures in flight
N201="${N201:-1000}"; NALL="${NALL:-200}"; NBS="${NBS:-1000}"; EPOCHS="${EPOCHS:-30}"; MODERN="${MODERN:-1000}"
if [ -n "${QUICK:-}" ]; then N201=50; NALL=20; NBS=50; EPOCHS=1; MODERN=10; fi
mkdir -p "$OUT"
python - <<'PY'
import os, platform, torch
print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}")
if not torch.cuda.is_available():
    raise SystemExit("gpu_check.sh: no CUDA device visible to torch; nothing to check")
print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PY
timed() { local name=$1; shift; local t0 t1; t0=$(date +%s%N); "$@"; t1=$(date +%s%N);
  echo "$name: $(( (t1 - t0) / 1000000 )) ms wall" | tee -a "$OUT/times.txt"; }
echo "== (1) NB201 fisher, $N201 archs, $WORKERS workers on cuda" | tee "$OUT/times.txt"
timed "nb201 fisher x$N201" zcbench eval --space nb201-cifar10 --proxy fisher --sample "$N201" --device cuda \
  --workers "$WORKERS" --threads 1 --no-plot --quiet --out "$OUT/nb201-fisher"
echo "== (2) NB201, fisher grad_norm snip grasp synflow jacob_cov naswot together, $NALL archs"
timed "nb201 7 proxies x$NALL" zcbench eval --space nb201-cifar10 \
  --proxy fisher,grad_norm,snip,grasp,synflow,jacob_cov,naswot --sample "$NALL" --device cuda \
  --workers "$WORKERS" --threads 1 --no-plot --quiet --out "$OUT/nb201-seven"
echo "== (3) BlockSwap search, $NBS candidates of WRN-40-2 at 800k (the paper: under 5 minutes on a Titan X)"
timed "blockswap x$NBS" python benchmarks/blockswap_search.py --samples "$NBS" --device cuda
echo "== (4) mini CIFAR BlockSwap comparison, $EPOCHS epochs"
timed "cifar mini" python benchmarks/blockswap_cifar_mini.py --device cuda --epochs "$EPOCHS" --workers 2 \
  --probe-images 0 --quiet --out "$OUT/cifar-mini"
if [ "$MODERN" != 0 ]; then
  echo "== (5) te_nas on $MODERN NB201 archs (CIFAR-10 test Spearman beside the published)"
  timed "modern x$MODERN" python benchmarks/reproduce_modern.py --proxies te_nas \
    --sample "$MODERN" --device cuda --workers "$WORKERS" --threads 1 --quiet --out "$OUT/modern"
  cat "$OUT/modern/modern.md"
fi
cat "$OUT/times.txt"
