#!/usr/bin/env bash
# LDLVA and LDL-ALSG beside the baseline on the real FERPlus, at a CPU budget (about 25
# minutes on 2 cores): every method's quick preset, 5 epochs, seed 0.
#   bash plugins/ferbench-ldl/benchmarks/ferplus_cpu.sh FERPLUS_ROOT OUT
# clean: the votes as the space (and the baseline trained on the votes, the fair arm);
# noise30: HOG of the image as the space (votes are withheld under noise).
set -euo pipefail
root=${1:?FERPlus root (tar -xzf ferplus.tar.gz)}; out=${2:-results-ldl-ferplus}
run() { ferbench run --dataset ferplus --data-root "$root" --preset quick --epochs 5 \
        --out "$out" --no-leaderboard "$@"; }
run --protocol clean --method baseline
run --protocol clean --method baseline soft_target=votes
run --protocol clean --method ldlva aux_space=votes
run --protocol clean --method ldl-alsg 'aux_spaces=[votes]'
run --protocol noise30 --method baseline
run --protocol noise30 --method ldlva aux_space=hog
run --protocol noise30 --method ldl-alsg 'aux_spaces=[hog]'
ferbench leaderboard "$out"
