#!/usr/bin/env bash
# LDLVA's `paper` preset on FERPlus on one GPU, every check in one script:
#   bash plugins/ferbench-ldl/benchmarks/gpu_check.sh FERPLUS_ROOT OUT [KEY=VALUE ...]
# 1. training images/s and peak GPU memory of the baseline, `ldlva` cache and `ldlva`
#    forward on the paper preset's backbone, image size and batch (ResNet-18, 224 px, 32),
#    2 epochs each, the first a warm-up;
# 2. `ldlva` under noise30 with HOG as the space, and the baseline on the same backbone,
#    image size and batch, for EPOCHS epochs (default 4 of the paper's 60: the step
#    schedule is scaled to the run), then the leaderboard.
# FERPLUS_ROOT `synthfer` runs it on the embedded set instead: a CPU check of the script
# (add backbone=ferbench_resnet_tiny image_size=48 to make it quick).
set -euo pipefail
root=${1:?FERPlus root (tar -xzf ferplus.tar.gz), or synthfer}; out=${2:?results folder}
shift 2
epochs=${EPOCHS:-4}
if [ "$root" = synthfer ]; then data=(--dataset synthfer); else
  data=(--dataset ferplus --data-root "$root"); fi
here=$(dirname "$0")
mkdir -p "$out"
# The paper preset's space is valence-arousal, which FERPlus does not have and noise30
# would withhold anyway: HOG, the label-free space, for every LDLVA arm.
python "$here/bench_neighbour_pass.py" "${data[@]}" --preset paper --epochs 2 --rounds 1 \
    --json "$out/speed.json" aux_space=hog "$@"
run() { ferbench run "${data[@]}" --protocol noise30 --preset paper --epochs "$epochs" \
        --out "$out" --no-leaderboard "$@"; }
run --method ldlva aux_space=hog "$@"
shared=$(python - "$@" <<'PY'
import sys
from ferbench.plugins import registry
m = registry().methods["ldlva"].obj
cfg = {**vars(m.Config()), **m.presets["paper"], **dict(a.split("=", 1) for a in sys.argv[1:])}
print(" ".join(f"{k}={cfg[k]}" for k in ("backbone", "image_size", "batch_size")))
PY
)
# shellcheck disable=SC2086
run --method baseline $shared
ferbench leaderboard "$out"
