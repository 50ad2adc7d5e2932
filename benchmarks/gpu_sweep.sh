#!/usr/bin/env bash
# A packed GPU: the same synthfer grid at --jobs 1, 4, 8, 16 on one GPU; cells per hour and
# the GPU's mean utilisation for each (nvidia-smi sampled every second); 16 cells each,
# aimed at under ten minutes in all on an H200 with 16 cores.
#   bash benchmarks/gpu_sweep.sh OUT
# On the CPU, to try the script: DEVICE=cpu JOBS="1 2" EPOCHS=1 SEEDS=0,1 bash ... OUT
# LIMIT=SECONDS stops each --jobs value's sweep there; its line then counts the cells done.
set -euo pipefail
out=${1:?a folder for the results}; mkdir -p "$out"
device=${DEVICE:-cuda}; jobs_list=${JOBS:-"1 4 8 16"}; epochs=${EPOCHS:-4}
seeds=${SEEDS:-0,1,2,3}
export FERBENCH_CACHE="$out/cache"
summary="$out/summary.txt"; : > "$summary"
for jobs in $jobs_list; do
  res="$out/jobs$jobs"; rm -rf "$res"
  util="$out/util$jobs.csv"; : > "$util"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 \
      > "$util" & smi=$!
  else smi=""; fi
  start=$(date +%s.%N)
  timeout "${LIMIT:-0}" ferbench run --method baseline --method man --protocol clean --protocol noise30 \
    --seeds "$seeds" --epochs "$epochs" --device "$device" --jobs "$jobs" \
    --out "$res" --no-leaderboard 2> "$out/jobs$jobs.log" || true
  end=$(date +%s.%N)
  [ -n "$smi" ] && kill "$smi" || true
  python - "$res" "$start" "$end" "$util" "$jobs" >> "$summary" <<'PY'
import json, pathlib, statistics, sys
res, start, end, util, jobs = sys.argv[1:]
wall = float(end) - float(start)
runs = [json.loads(p.read_text()) for p in pathlib.Path(res).rglob("seed*.json")]
u = [float(l.split(",")[0]) for l in open(util) if l.strip()]
m = [float(l.split(",")[1]) for l in open(util) if l.strip()]
print(f"--jobs {jobs}: {len(runs)} cells in {wall:.0f} s = {len(runs) * 3600 / wall:.0f} "
      f"cells/h; runs' own time {sum(r['wall_time_s'] for r in runs):.0f} s; GPU "
      f"utilisation mean {statistics.mean(u) if u else float('nan'):.0f} %, memory peak "
      f"{max(m) if m else float('nan'):.0f} MiB; threads per run "
      f"{sorted({r['device']['threads'] for r in runs})}")
PY
  tail -1 "$summary"
done
