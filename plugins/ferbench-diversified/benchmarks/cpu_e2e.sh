#!/usr/bin/env bash
# ESR and MA-Net, with and without the diversity term, beside the baseline at a CPU budget
# (about 30 minutes on 2 cores), seed 0, quick presets (quarter widths at 48 px):
# - synthfer under noise30, 10 % of the training set held out for validation (the best
#   ensemble on validation; the baseline gets the same split), 8 epochs; ESR with three
#   branches (the quick preset's original ESR, no CBAM), the code's zero-diagonal form as an
#   arm, and ESR-div with the code's CBAM layout as another;
# - the real FERPlus (clean; its own validation split), 4 epochs, at most 1,500 training faces
#   per class for every method (the recipe's cap is 5,000).
#   bash plugins/ferbench-diversified/benchmarks/cpu_e2e.sh FERPLUS_ROOT OUT
set -euo pipefail
root=${1:?FERPlus root (tar -xzf ferplus.tar.gz)}; out=${2:-results-diversified-cpu}
syn() { ferbench run --preset quick --protocol noise30 --epochs 8 --out "$out/synthfer" \
        --no-leaderboard "$@" protocol.val_fraction=0.1; }
fer() { ferbench run --dataset ferplus --data-root "$root" --preset quick --protocol clean \
        --epochs 4 --out "$out/ferplus" --no-leaderboard "$@"; }
syn --method baseline
syn --method esr --method esr-div n_branches=3
syn --method esr-div n_branches=3 diversity_form=det_zero_diag
syn --method esr-div n_branches=3 cbam=true
syn --method manet --method manet-div
fer --method baseline
fer --method esr --method esr-div cap_per_class=1500
fer --method manet --method manet-div cap_per_class=1500
ferbench leaderboard "$out/synthfer"
ferbench leaderboard "$out/ferplus"
