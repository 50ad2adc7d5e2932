"""A whole grid at `--jobs 1` against `--jobs N`: cells per hour, threads, memory per worker.

    python benchmarks/bench_sweep.py [--jobs 2] [--rounds 2] [--epochs 2]
        [--methods baseline,man] [--protocols clean,noise30] [--seeds 0,1,2]
        [--device cpu] [--json out.json]

Runs the grid methods × protocols × seeds (`quick` presets, synthfer) as one sweep into a
fresh results folder, once with `--jobs 1` and once with `--jobs N`, in `--rounds`
interleaved rounds (these shared cores drift: the ratio is taken within a round, medians
printed). Prints, for each: wall time, cells per hour, the threads each run recorded, the
machine's load average, and each worker's peak resident memory (from the cells' logs)
against that of the same run alone in a plain `ferbench run`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def grid_args(args) -> list[str]:
    out = []
    for m in args.methods.split(","):
        out += ["--method", m]
    for p in args.protocols.split(","):
        out += ["--protocol", p]
    out += ["--seeds", args.seeds, "--device", args.device, "--no-leaderboard"]
    if args.epochs:
        out += ["--epochs", str(args.epochs)]
    return out


def ferbench(*argv, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferbench.cli", *map(str, argv)],
                          capture_output=True, text=True, check=check)


def sweep(args, jobs: int, out: Path) -> dict:
    t0 = time.perf_counter()
    res = ferbench("run", *grid_args(args), "--jobs", jobs, "--out", out)
    wall = time.perf_counter() - t0
    records = [json.loads(p.read_text()) for p in out.rglob("seed*.json")]
    peaks = [float(m) for log in (out / "sweep" / "logs").glob("*.log")
             for m in re.findall(r"peak resident memory of this worker: (\d+) MiB",
                                 log.read_text())]
    done = re.search(r"sweep: (\d+) done", res.stderr)
    return {"jobs": jobs, "wall_s": wall, "cells": len(records),
            "done": int(done.group(1)) if done else 0,
            "cells_per_hour": len(records) * 3600 / wall,
            "threads": sorted({r["device"]["threads"] for r in records}),
            "runs_wall_s": sum(r["wall_time_s"] for r in records),
            "peak_worker_mib": max(peaks) if peaks else None,
            "load_after": os.getloadavg()[0]}


def single_run_peak(args, out: Path) -> float:
    """Peak resident memory of the grid's first method alone, in a plain `ferbench run`
    (the largest of this process's children so far: run it first)."""
    method = args.methods.split(",")[-1]  # the heaviest is listed last by convention
    ferbench("run", "--method", method, "--protocol", args.protocols.split(",")[-1],
             "--seeds", "0", "--device", args.device, "--no-leaderboard", "--out", out,
             *(["--epochs", str(args.epochs)] if args.epochs else []))
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="default: each quick preset's")
    ap.add_argument("--methods", default="baseline,man")
    ap.add_argument("--protocols", default="clean,noise30")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("FERBENCH_CACHE", str(tmp / "cache"))
        alone_peak = single_run_peak(args, tmp / "alone")
        for r in range(args.rounds):
            row = {}
            order = (1, args.jobs) if r % 2 == 0 else (args.jobs, 1)
            for jobs in order:
                row[jobs] = sweep(args, jobs, tmp / f"r{r}-j{jobs}")
            row["ratio"] = row[args.jobs]["cells_per_hour"] / row[1]["cells_per_hour"]
            rounds.append(row)
            print(f"round {r + 1}: " + "; ".join(
                f"--jobs {j}: {row[j]['cells']} cells in {row[j]['wall_s']:.0f} s "
                f"({row[j]['cells_per_hour']:.0f}/h, threads {row[j]['threads']}, peak "
                f"{row[j]['peak_worker_mib']} MiB per worker, load {row[j]['load_after']:.2f})"
                for j in (1, args.jobs)) + f"; ratio {row['ratio']:.2f}", flush=True)
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.machine())
    print(f"CPU: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"grid: {args.methods} × {args.protocols} × seeds {args.seeds}, quick"
          + (f", {args.epochs} epochs" if args.epochs else "") + f", {args.device}")
    for j in (1, args.jobs):
        print(f"  --jobs {j}: median {statistics.median(r[j]['cells_per_hour'] for r in rounds):.0f}"
              f" cells/h, wall {statistics.median(r[j]['wall_s'] for r in rounds):.0f} s, "
              f"threads per run {rounds[-1][j]['threads']}, peak per worker "
              f"{max((r[j]['peak_worker_mib'] or 0) for r in rounds):.0f} MiB")
    print(f"  ratio --jobs {args.jobs} / --jobs 1: median "
          f"{statistics.median(r['ratio'] for r in rounds):.2f}; a single run alone peaks at "
          f"{alone_peak:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rounds": [{str(k): v for k, v in r.items()} for r in rounds],
             "alone_peak_mib": alone_peak, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
