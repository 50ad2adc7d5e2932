"""Ablation of a training recipe on FERPlus: each ingredient changed alone, several seeds, one run.

    python benchmarks/ablate_recipe.py --data-root DIR [--preset quick] [--epochs 4]
        [--seeds 0,1] [--variants all] [--jobs 2] [--out runs/ablation] [--json out.json]

Every variant is the baseline under --preset with one set of config overrides (the
optimiser, the schedule, label smoothing, the augmentation, the batch size, test-time
flip, ...). Each (variant, seed) is one `ferbench run` on the clean FERPlus protocol
stored under --out, so an interrupted ablation continues where it stopped. Prints
the final-epoch validation accuracy (the number to choose by) and test accuracy (the
number to report), mean ± std over seeds, and each variant's difference from the
reference in validation accuracy. With --jobs N, N runs train at once, each on
cores/N threads: accuracies are unaffected, training times are then contended.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

# name: overrides of the preset's config. Each changes one ingredient of the recipe.
VARIANTS = {
    "reference": [],
    "sgd": ["optimizer=sgd", "lr=0.1"],
    "lr_1e-3": ["lr=1e-3"],
    "lr_1e-2": ["lr=1e-2"],
    "cosine": ["scheduler=cosine"],
    "label_smoothing_0.1": ["label_smoothing=0.1"],
    "no_augmentation": ["views=[none]"],
    "flip_only": ["views=[[weak,{pad:0.0}]]"],
    "erasing_0.25": ["views=[[weak,{erase:0.25}]]"],
    "batch_32": ["batch_size=32"],
    "batch_128": ["batch_size=128"],
    "weight_decay_0.05": ["weight_decay=0.05"],
    "tta_flip": ["tta_flip=true"],
}


def one_run(root: str, preset: str, variant: str, epochs: int, seed: int, device: str,
            out: str, threads: int | None = None) -> dict:
    import torch

    from ferbench.runner import RunRequest, run

    if threads:
        torch.set_num_threads(threads)
    [path] = run(RunRequest(methods=["baseline"], dataset="ferplus", data_root=root,
                            protocols=["clean"], seeds=[seed], preset=preset,
                            flags={"epochs": epochs, "device": device},
                            overrides=[f"engine.eval_every={epochs}", *VARIANTS[variant]],
                            out=str(Path(out) / preset / variant), leaderboard=False,
                            show_progress=False))
    rec = json.loads(path.read_text())
    return {"test_acc": rec["metrics"]["test_acc"], "val_acc": rec["history"][-1].get("val_acc"),
            "train_seconds": sum(h["seconds"] for h in rec["history"]),
            "device": rec["device"].get("name"), "precision": rec["precision"]}


def summarise(runs: dict) -> dict:
    """{variant: {seed: run}} → per variant the mean and std over seeds, and the difference of
    its mean validation (and test) accuracy from the reference's."""
    table = {}
    for variant, by_seed in runs.items():
        val = np.array([r["val_acc"] for r in by_seed.values()], dtype=float)
        test = np.array([r["test_acc"] for r in by_seed.values()], dtype=float)
        secs = np.array([r["train_seconds"] for r in by_seed.values()], dtype=float)
        sd = (lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0)
        table[variant] = {"seeds": len(val), "val_acc": float(val.mean()), "val_acc_std": sd(val),
                          "test_acc": float(test.mean()), "test_acc_std": sd(test),
                          "train_seconds": float(secs.mean())}
    ref = table.get("reference")
    for row in table.values():
        row["val_delta"] = row["val_acc"] - ref["val_acc"] if ref else None
        row["test_delta"] = row["test_acc"] - ref["test_acc"] if ref else None
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    ap.add_argument("--ferplus", default=str(here.parents[1] / "shared/data/ferplus.tar.gz"))
    ap.add_argument("--data-root", default=None, help="an unpacked FERPlus (skips unpacking)")
    ap.add_argument("--preset", default="quick", help="the baseline preset every variant starts from")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--variants", default="all", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="runs training at once")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    sys.path.insert(0, str(here))
    from bench_time_to_accuracy import ferplus_root

    root = ferplus_root(args.data_root, args.ferplus)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(v, s) for v in variants for s in seeds]
    common = (str(root), args.preset)
    tail = (args.device, args.out)
    if args.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {job: pool.submit(one_run, *common, job[0], args.epochs, job[1], *tail,
                                        threads) for job in jobs}
            done = {job: f.result() for job, f in futures.items()}
    else:
        done = {job: one_run(*common, job[0], args.epochs, job[1], *tail) for job in jobs}
    runs = {v: {s: done[(v, s)] for s in seeds} for v in variants}
    table = summarise(runs)
    first = next(iter(done.values()))
    print(f"\nbaseline preset {args.preset!r}, {args.epochs} epochs, seeds {seeds}, "
          f"{first['device']}, {first['precision']}; FERPlus final-epoch accuracy, mean ± std")
    print(f"  {'variant':<22} {'val %':>14} {'Δ val':>6} {'test %':>14} {'Δ test':>6} {'train s':>8}")
    for v, row in table.items():
        print(f"  {v:<22} {100 * row['val_acc']:7.2f} ± {100 * row['val_acc_std']:4.2f} "
              f"{100 * (row['val_delta'] or 0):+6.2f} {100 * row['test_acc']:7.2f} ± "
              f"{100 * row['test_acc_std']:4.2f} {100 * (row['test_delta'] or 0):+6.2f} "
              f"{row['train_seconds']:8.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"preset": args.preset, "epochs": args.epochs, "seeds": seeds, "jobs": args.jobs,
             "variants": {v: VARIANTS[v] for v in variants}, "runs": runs, "summary": table},
            indent=1, default=float))


if __name__ == "__main__":
    main()
