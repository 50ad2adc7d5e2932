#!/usr/bin/env bash
# Every GPU check of ESR and MA-Net in one script, under ten minutes on one H200:
#   bash plugins/ferbench-diversified/benchmarks/gpu_check.sh FERPLUS_ROOT OUT [KEY=VALUE ...]
# 1. images/s and peak GPU memory at the paper sizes (ESR-9 at 96 px, batch 32; MA-Net at
#    224 px, batch 128) with the term (esr-div, manet-div) and without (esr, manet), against
#    ResNet-18 at the same size (bench_diversified_speed.py);
# 2. esr against esr-div on FERPlus (clean), the paper preset with joint training, for
#    EPOCHS epochs each (default 10) within RUN_SECONDS each (default 200): accuracies and the
#    branch similarity of each in the leaderboard's method figures.
# Tried on the CPU with: BENCH="--sizes 48 --batch 4 --steps 1 --rounds 1" EPOCHS=1 \
#   bash gpu_check.sh DIR OUT backbone=ferbench_esr_quarter image_size=48 padded=true \
#   n_branches=3 cap_per_class=50
set -euo pipefail
root=${1:?FERPlus root (tar -xzf ferplus.tar.gz)}; out=${2:?output folder}; shift 2
here=$(dirname "$0")
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/gpu.txt" 2>/dev/null || true
python "$here/bench_diversified_speed.py" --arch esr --sizes paper --batch 32 --steps 10 \
    --rounds 2 ${BENCH:-} --json "$out/speed-esr.json" | tee "$out/speed.txt"
python "$here/bench_diversified_speed.py" --arch manet --sizes paper --batch 128 --steps 5 \
    --rounds 2 ${BENCH:-} --json "$out/speed-manet.json" | tee -a "$out/speed.txt"
for m in esr esr-div; do
    timeout "${RUN_SECONDS:-200}" ferbench run --dataset ferplus --data-root "$root" \
        --method "$m" --preset paper --epochs "${EPOCHS:-10}" --out "$out/results" \
        --no-leaderboard training=joint "$@" 2>&1 | tee -a "$out/run.txt" \
        || echo "the $m run stopped at its time limit: see run.txt" | tee -a "$out/run.txt"
done
ferbench leaderboard "$out/results" || true
