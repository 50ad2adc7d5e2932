#!/usr/bin/env bash
# Every GPU check of UA-FER in one script, under ten minutes on one H200:
#   bash plugins/ferbench-uafer/benchmarks/gpu_check.sh FERPLUS_ROOT OUT [KEY=VALUE ...]
# 1. images/s and peak GPU memory of uafer at its paper preset (ViT-B-16, 224 px, batch 128,
#    bf16) against the same towers alone (bench_uafer_speed.py);
# 2. uafer's paper preset on FERPlus (clean) for EPOCHS epochs (default 4) within
#    RUN_SECONDS (default 420): random towers unless clip_weights=PATH is among the KEY=VALUEs.
# Tried on the CPU with: STEPS=2 EPOCHS=1 bash gpu_check.sh DIR OUT backbone=clip:uafer-tiny \
#   image_size=64 topk=5 batch_size=32
set -euo pipefail
root=${1:?FERPlus root (tar -xzf ferplus.tar.gz)}; out=${2:?output folder}; shift 2
here=$(dirname "$0")
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/gpu.txt" 2>/dev/null || true
python "$here/bench_uafer_speed.py" --preset paper --steps "${STEPS:-10}" --rounds 4 \
    --json "$out/speed.json" -- "$@" | tee "$out/speed.txt"
timeout "${RUN_SECONDS:-420}" ferbench run --dataset ferplus --data-root "$root" \
    --method uafer --preset paper --epochs "${EPOCHS:-4}" --out "$out/results" "$@" \
    2>&1 | tee "$out/run.txt" || echo "the FERPlus run stopped at its time limit: see run.txt"
ferbench leaderboard "$out/results" || true
