#!/usr/bin/env bash
# Every GPU check of this repository's methods and of the packed sweep, in one command of
# under ten minutes on one GPU (an H200 with 16 cores):
#   bash benchmarks/gpu_checks.sh FERPLUS_ROOT OUT
# Parts, in this order, each under its own time limit (LIMIT_<PART> seconds) so that a slow
# part cannot starve the next:
#   ldl          LDLVA's `paper` preset (ResNet-18, 224 px, batch 32) under noise30 with HOG
#                as the space: the baseline, the cached and the forward neighbour pass, each a
#                whole run of LDL_EPOCHS epochs (default 2, the first a warm-up): images/s,
#                peak GPU memory, test accuracy and the 1 - λ AUROC of flipped labels;
#   diversified  ESR-9 (96 px, batch 32) and MA-Net (224 px, batch 128) with and without the
#                diversity term against ResNet-18 on a batch in memory; then esr against
#                esr-div (paper preset, joint training) on FERPlus clean;
#   uafer        ViT-B-16 at 224 px, batch 128, against the same towers alone; then uafer's
#                paper preset on FERPlus clean (random towers: no CLIP weights here);
#   sweep        benchmarks/gpu_sweep.sh at --jobs 1 (the packed figures are --jobs 4-16).
# DIV_SPEED=0 skips the diversified speed benchmark (its figures are in the plugin README),
# leaving that part's whole limit to the esr / esr-div runs.
# A training run gets the epochs that fit its share of the limit at 40 % of the images/s its
# part measured on a batch in memory (a real epoch also loads, augments and evaluates), or
# <PART>_EPOCHS where that is set; `timeout` still guards it, and its per-epoch test accuracy
# is in the log even where the limit stops it.
# OUT gets gpu_checks.log and results.tgz (speed JSONs, result files, leaderboards), the
# archive refreshed after every part so that a command stopped early still returns it.
# A CPU try of the script (tiny models, a few minutes):
#   PARTS="ldl diversified uafer" LDL_ARGS="backbone=ferbench_resnet_tiny image_size=48" \
#   DIV_BENCH="--sizes 48 --batch 4 --steps 1 --rounds 1" DIV_EPOCHS=1 DIV_ARGS="backbone=\
#   ferbench_esr_quarter image_size=48 padded=true n_branches=3 cap_per_class=50" \
#   UAFER_STEPS=1 UAFER_EPOCHS=1 UAFER_ARGS="backbone=clip:uafer-tiny image_size=64 topk=5 \
#   batch_size=32" bash benchmarks/gpu_checks.sh FERPLUS_ROOT OUT
set -uo pipefail
root=${1:?FERPlus root (tar -xzf ferplus.tar.gz)}; out=${2:?output folder}
mkdir -p "$out"; out=$(cd "$out" && pwd)
work=${WORK:-$out/work}; mkdir -p "$work"
export FERBENCH_CACHE=${FERBENCH_CACHE:-$work/cache} PYTHONUNBUFFERED=1
repo=$(cd "$(dirname "$0")/.." && pwd)
log="$out/gpu_checks.log"
exec > >(tee -a "$log") 2>&1
read -r -a ldl_args <<< "${LDL_ARGS:-}"; read -r -a div_args <<< "${DIV_ARGS:-}"
read -r -a uafer_args <<< "${UAFER_ARGS:-}"
# Kept faces under FERPlus's majority scheme (the dataset README's counts); ESR caps each
# class at 5000 of them.
n_train=25045; n_train_esr=19028

stamp() { echo "=== $(date -u +%H:%M:%S) $*"; }
pack() { tar -czf "$out/results.tgz" -C "$work" --exclude=cache --exclude='*.pt' \
           --exclude='*.ckpt' --exclude=checkpoints . 2>/dev/null || true; }
# epochs that fit SECONDS at 40 % of IMAGES_PER_S over N images, at least 1
fit() { python3 -c "import sys; s, r, n = map(float, sys.argv[1:]); print(max(1, int(0.4 * s * r / n)))" "$@"; }
# KEY (a dotted path) of a JSON file, or 0 where the file or the key is missing
json_get() { python3 - "$@" <<'PY'
import json, sys
try:
    v = json.load(open(sys.argv[1]))
    for k in sys.argv[2].split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    print(v)
except Exception:
    print(0)
PY
}

part_ldl() {
  timeout -k 5 "${LIMIT_LDL:-150}" python3 \
    "$repo/plugins/ferbench-ldl/benchmarks/bench_neighbour_pass.py" --dataset ferplus \
    --data-root "$root" --preset paper --epochs "${LDL_EPOCHS:-2}" --rounds 1 \
    --json "$work/ldl-speed.json" aux_space=hog "${ldl_args[@]}"
}

part_diversified() {
  local limit=${LIMIT_DIVERSIFIED:-150} here="$repo/plugins/ferbench-diversified/benchmarks"
  local t0=$SECONDS
  if [ "${DIV_SPEED:-1}" != 0 ]; then   # DIV_SPEED=0: only the esr / esr-div runs
    # shellcheck disable=SC2086
    timeout -k 5 60 python3 "$here/bench_diversified_speed.py" --arch esr --sizes paper \
      --batch 32 --steps 10 --rounds 2 ${DIV_BENCH:-} --json "$work/div-speed-esr.json"
    # shellcheck disable=SC2086
    timeout -k 5 40 python3 "$here/bench_diversified_speed.py" --arch manet --sizes paper \
      --batch 128 --steps 5 --rounds 2 ${DIV_BENCH:-} --json "$work/div-speed-manet.json"
  fi
  local each=$(( (limit - (SECONDS - t0)) / 2 ))
  local ips; ips=$(json_get "$work/div-speed-esr.json" rows.0.images_per_s.plain)
  local epochs=${DIV_EPOCHS:-$(fit "$each" "$ips" "$n_train_esr")}
  echo "esr and esr-div: $epochs epochs each, at most $each s each"
  for m in esr esr-div; do
    timeout -k 5 "$each" ferbench run --dataset ferplus --data-root "$root" --method "$m" \
      --preset paper --epochs "$epochs" --out "$work/diversified" --no-leaderboard \
      training=joint "${div_args[@]}" || echo "$m stopped at its limit of $each s"
  done
  ferbench leaderboard "$work/diversified" --out "$work/diversified" || true
}

part_uafer() {
  local limit=${LIMIT_UAFER:-140} t0=$SECONDS
  timeout -k 5 60 python3 "$repo/plugins/ferbench-uafer/benchmarks/bench_uafer_speed.py" \
    --preset paper --steps "${UAFER_STEPS:-10}" --rounds 2 --json "$work/uafer-speed.json" \
    -- "${uafer_args[@]}"
  local left=$(( limit - (SECONDS - t0) ))
  local ips; ips=$(json_get "$work/uafer-speed.json" images_per_s.uafer.0)
  local epochs=${UAFER_EPOCHS:-$(fit "$left" "$ips" "$n_train")}
  echo "uafer: $epochs epochs, at most $left s"
  timeout -k 5 "$left" ferbench run --dataset ferplus --data-root "$root" --method uafer \
    --preset paper --epochs "$epochs" --out "$work/uafer" --no-leaderboard \
    "${uafer_args[@]}" || echo "uafer stopped at its limit of $left s"
  ferbench leaderboard "$work/uafer" --out "$work/uafer" || true
}

part_sweep() {
  LIMIT=${LIMIT_SWEEP:-90} JOBS=1 SEEDS=${SWEEP_SEEDS:-0} bash "$repo/benchmarks/gpu_sweep.sh" \
    "$work/sweep"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  || echo "no nvidia-smi"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.is_available() and torch.cuda.get_device_name(0))"
for part in ${PARTS:-ldl diversified uafer sweep}; do
  stamp "$part"
  "part_$part" || echo "part $part ended with status $?"
  pack
done
stamp done
