#!/usr/bin/env bash
# The GPU path's checks and speed measurements in one command (at most 8.5 minutes of steps, so that it fits a
# 10-minute device call): the GPU path must run, and the CUDA targets (PGD >= 1.5x and DeepFool >= 20x torchattacks
# at equal strength; training throughput and MFU recorded in docs/performance.md) are measured, not assumed:
#   1. the attack benchmarks on CUDA against torchattacks (PGD-20, FGSM, DeepFool, CW; same model and batch)
#   2. one epoch of ResNet-18 width 64 training (standard and PGD-10 AT) on CIFAR-shaped tensors: images/s and MFU
#      against the device's bf16 dense peak, bf16 + compile, bf16 eager, fp32 eager
#   3. the fast budget of two claims on Fashion-MNIST (LP-7: ResNet-18 ADV; CV-8: LeNet), one seed
#   4. the bf16-vs-fp32 PGD strength test on CUDA
# Every step has its own time limit, writes its log to $OUT, and a failing step does not stop the others.
#
#   scripts/gpu_check.sh          on the GPU machine (python3 there holds torch; see the device notes)
#   scripts/gpu_check.sh --dry    every step on the CPU at toy sizes: checks the script, measures nothing
#
# Needs beside the checkout (carried, git-ignored): .gpu/whl/ (torchattacks' wheel) and .gpu/data/FashionMNIST/raw/
# (the four idx .gz files); scripts/gpu_check.sh --prepare makes both here.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-gpu}"
PY="${PYTHON:-python3}"
OUT="${OUT:-reports/gpu_check}"
mkdir -p "$OUT"

if [ "$MODE" = "--prepare" ]; then
  mkdir -p .gpu/whl .gpu/data/FashionMNIST/raw
  cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu/data/FashionMNIST/raw/
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl torchattacks==3.5.1
  du -sh .gpu
  exit 0
fi

export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/lib:$PWD${PYTHONPATH:+:$PYTHONPATH}" ADVCLAIMS_CACHE="${ADVCLAIMS_CACHE:-$PWD/.gpu/store}"
[ -d .gpu/data ] && export ADVCLAIMS_DATA="$PWD/.gpu/data"
if [ -d .gpu/whl ] && ! "$PY" -c "import torchattacks" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

if [ "$MODE" = "--dry" ]; then
  DEV=cpu; WIDTH=8; BUDGET=smoke; LIMIT=600; PRECISIONS="fp32:off"
else
  DEV=cuda; WIDTH=64; BUDGET=fast; LIMIT=120; PRECISIONS="bf16:on bf16:off fp32:off"
fi
: > "$OUT/summary.txt"

step() {  # step NAME SECONDS command...
  local name=$1 seconds=$2; shift 2
  local start; start=$(date +%s)
  echo "== $name: $*"
  timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "$name rc=$rc $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
}

step environment 15 "$PY" -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__,
  'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
[ "$DEV" = cuda ] && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >> "$OUT/environment.log"

step attacks "$LIMIT" "$PY" -m pytest benchmarks/test_attack_speed.py --benchmark-only -p no:cacheprovider -q \
  --repro-device "$DEV" --bench-width "$WIDTH"

for pc in $PRECISIONS; do
  step "training_${pc%%:*}_compile_${pc##*:}" 80 "$PY" -m pytest benchmarks/test_training_speed.py --benchmark-only \
    -p no:cacheprovider -q --repro-device "$DEV" --bench-width "$WIDTH" \
    --repro-precision "${pc%%:*}" --repro-compile "${pc##*:}"
done

step claims_fast $(( LIMIT - 30 )) "$PY" -m pytest claims -m fashion_mnist -k "fgsm_is_weaker or top_singular" -p no:cacheprovider \
  -q --repro-budget "$BUDGET" --repro-seeds 1 --repro-device "$DEV" --repro-quiet --repro-report "$OUT/claims"

step bf16_strength 45 "$PY" -m pytest tests/test_accel.py -k "bf16_pgd or compiled_training" -p no:cacheprovider -q -rs

cat "$OUT/summary.txt"
