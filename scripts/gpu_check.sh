#!/usr/bin/env bash
# The GPU path's checks and speed measurements in one command (at most 9.6 minutes of step limits, so that it fits a
# 10-minute device call): the GPU path must run, and the CUDA targets (PGD >= 1.5x and DeepFool >= 20x torchattacks
# at equal strength; training throughput and MFU recorded in docs/performance.md) are measured, not assumed:
#   1. the attack benchmarks on CUDA against torchattacks (PGD-20, FGSM, DeepFool, CW; same model and batch)
#   2. one epoch of ResNet-18 width 64 training (standard and PGD-10 AT) on CIFAR-shaped tensors: images/s and MFU
#      against the device's bf16 dense peak, bf16 + compile and fp32 eager (bf16 eager left out for time)
#   3. the fast budget of two claims on Fashion-MNIST (LP-7: ResNet-18 ADV; CV-8: LeNet), one seed
#   4. the bf16-vs-fp32 PGD strength test on CUDA
#   5. issue 24 (scripts/gpu_items.py): CUDA present (fails otherwise) with driver and TF32 settings; a compiled bf16
#      ResNet-18 training with a partial last batch, SIGKILLed once epoch 1 is saved and resumed, with no recompile;
#      DeepFool as the attack runs (autotuning off) and with cudnn.benchmark on, each timed after a warm-up; CV-7's
#      saliency + FGSM on 10,000 NiN images on worker gw1's GPU (set as the plugin sets it) with its peak memory; one
#      deterministic-mode backward through the resampling defence, with the warning torch gives there; Algorithm 1's
#      float64 decomposition on the device; `torchrun --nproc_per_node 2` for a short epoch of a narrow ResNet-18
#      (NCCL on two GPUs, else gloo on the CPU: a 1-GPU machine cannot run two NCCL ranks), world size 2 asserted
# Every step has its own time limit, writes its log to $OUT, and a failing step does not stop the others; the
# script exits 1 when any step failed (summary.txt lists each step's rc).
#
#   scripts/gpu_check.sh          on the GPU machine (python3 there holds torch; see the device notes)
#   scripts/gpu_check.sh --dry    every step on the CPU at toy sizes (a few minutes): checks the script, measures
#                                 nothing (benchmarks at width 2, the claims as a smoke preflight)
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

if [ "$MODE" = "--dry" ]; then   # toy sizes: the dry run checks that every step runs, in a few minutes
  DEV=cpu; WIDTH=2; BATCH=8; BUDGET=smoke; CLAIMS_EXTRA="--repro-preflight"; LIMIT=90; TRAIN_LIMIT=60
  PRECISIONS="fp32:off"
else
  DEV=cuda; WIDTH=64; BATCH=128; BUDGET=fast; CLAIMS_EXTRA=""; LIMIT=90; TRAIN_LIMIT=70; PRECISIONS="bf16:on fp32:off"
fi
: > "$OUT/summary.txt"

step() {  # step NAME SECONDS command...  (--dry: the same limits; its toy sizes take seconds a step)
  local name=$1 seconds=$2; shift 2
  local start; start=$(date +%s)
  echo "== $name: $*"
  timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "$name rc=$rc $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
}

DRYFLAG=""; [ "$MODE" = "--dry" ] && DRYFLAG="--dry"
step environment 15 "$PY" -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__,
  'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
[ "$DEV" = cuda ] && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv >> "$OUT/environment.log"
step cuda_env 20 "$PY" scripts/gpu_items.py env $DRYFLAG   # rc 1 on the GPU machine when torch sees no CUDA

step attacks "$LIMIT" "$PY" -m pytest benchmarks/test_attack_speed.py --benchmark-only -p no:cacheprovider -q \
  --repro-device "$DEV" --bench-width "$WIDTH" --bench-batch "$BATCH"

for pc in $PRECISIONS; do
  step "training_${pc%%:*}_compile_${pc##*:}" "$TRAIN_LIMIT" "$PY" -m pytest benchmarks/test_training_speed.py --benchmark-only \
    -p no:cacheprovider -q --repro-device "$DEV" --bench-width "$WIDTH" \
    --repro-precision "${pc%%:*}" --repro-compile "${pc##*:}"
done

step claims_fast $(( LIMIT - 30 )) "$PY" -m pytest claims -m fashion_mnist -k "fgsm_is_weaker or top_singular" -p no:cacheprovider \
  -q --repro-budget "$BUDGET" --repro-seeds 1 --repro-device "$DEV" --repro-quiet --repro-report "$OUT/claims" $CLAIMS_EXTRA

step bf16_strength 30 "$PY" -m pytest tests/test_accel.py -k "bf16_pgd or compiled_training" -p no:cacheprovider -q -rs

step resume_compiled 75 "$PY" scripts/gpu_items.py resume $DRYFLAG
step deepfool_benchmark 40 "$PY" scripts/gpu_items.py deepfool $DRYFLAG
step saliency_10k 45 "$PY" scripts/gpu_items.py saliency $DRYFLAG
step deterministic_defence 15 "$PY" scripts/gpu_items.py deterministic $DRYFLAG
step curvature_linalg 15 "$PY" scripts/gpu_items.py linalg $DRYFLAG
step torchrun_2 30 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 scripts/gpu_items.py ddp $DRYFLAG

cat "$OUT/summary.txt"
! grep -v " rc=0 " "$OUT/summary.txt" > /dev/null   # exit 1 when any step failed
