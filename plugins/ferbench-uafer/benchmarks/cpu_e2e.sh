#!/usr/bin/env bash
# UA-FER beside the baseline on synthfer (noise30) and on the real FERPlus (clean), at a CPU
# budget (about 25 minutes on 2 cores): quick presets (the small uafer-tiny CLIP at 64 px,
# random towers: no CLIP file can be reached offline), seed 0, and the kd_weight=0 arm.
#   bash plugins/ferbench-uafer/benchmarks/cpu_e2e.sh FERPLUS_ROOT OUT
set -euo pipefail
root=${1:?FERPlus root (tar -xzf ferplus.tar.gz)}; out=${2:-results-uafer-cpu}
here=$(dirname "$0")
syn() { ferbench run --preset quick --protocol noise30 --out "$out/synthfer" --no-leaderboard "$@"; }
fer() { ferbench run --dataset ferplus --data-root "$root" --preset quick --protocol clean \
        --out "$out/ferplus" --no-leaderboard "$@"; }
syn --method baseline
syn --method uafer
syn --method uafer kd_weight=0
fer --method baseline
fer --method uafer
fer --method uafer kd_weight=0
ferbench leaderboard "$out/synthfer"
ferbench leaderboard "$out/ferplus"
python "$here/u_vs_softmax.py" "$out/synthfer"
python "$here/u_vs_softmax.py" "$out/ferplus"
