"""Time to accuracy on FERPlus: fixed schedules of growing length, several seeds, one run.

    python benchmarks/bench_time_to_accuracy.py [--ferplus ../shared/data/ferplus.tar.gz]
        [--recipes fast,resnet18_s1] [--epochs 2,4,6,8,10] [--seeds 0,1,2]
        [--targets 84,85,86] [--device auto] [--out runs/tta] [--json tta.json]

"Time to X %" is the training time of the shortest schedule (a fixed number of
epochs with its one-cycle schedule fitted to it) whose FINAL-epoch FERPlus
majority-label test accuracy, averaged over the seeds, reaches X: never the
best epoch seen on the test set. Each (recipe, epochs, seed) is one
`ferbench run` stored under --out, so an interrupted benchmark continues where
it stopped; the test and validation sets are evaluated once, after the last
epoch. Prints a table per recipe (mean ± std of accuracy and training time per
schedule, validation accuracy beside it for tuning) and the time to each target.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

# Each recipe is the baseline method with a preset and flags; the runs record the full config.
RECIPES = {
    "quick": {"preset": "quick", "flags": {}},
    # The reference point: ResNet-18 with a stride-1 3x3 stem and no max-pool, 48 px,
    # one-cycle SGD, label smoothing (the paper preset's optimiser at the quick preset's size).
    "resnet18_s1": {"preset": "paper", "flags": {"backbone": "ferbench_resnet18_s1",
                                                 "image_size": 48, "batch_size": 128}},
    # ResNet-18 (stride-1 stem) under the quick preset's optimiser (AdamW, batch 64).
    "resnet18_s1_adamw": {"preset": "quick", "flags": {"backbone": "ferbench_resnet18_s1"}},
    # The FaceResNet family under the quick preset's optimiser: tiny is `quick`, base is the
    # `fast` preset (10 epochs unless --epochs says otherwise), small sits between them.
    "small": {"preset": "quick", "flags": {"backbone": "ferbench_resnet_small"}},
    "fast": {"preset": "fast", "flags": {}},
}


def unpack(archive: Path) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="ferbench-tta-"))
    if shutil.which("tar"):
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest / "ferplus"


def ferplus_root(data_root: str | None, archive: str) -> Path:
    """An unpacked FERPlus: `data_root` as given, else the archive unpacked to a temporary folder."""
    if data_root:
        return Path(data_root)
    if not Path(archive).exists():
        raise SystemExit(f"{archive}: FERPlus archive not found; pass --ferplus PATH")
    return unpack(Path(archive))


def one_run(root: Path, recipe: str, epochs: int, seed: int, device: str, out: Path,
            overrides: list[str] = ()) -> dict:
    from ferbench.runner import RunRequest, run

    spec = RECIPES[recipe]
    flags = {**spec["flags"], "epochs": epochs, "device": device}
    [path] = run(RunRequest(methods=["baseline"], dataset="ferplus", data_root=str(root),
                            protocols=["clean"], seeds=[seed], preset=spec["preset"],
                            flags=flags, overrides=[f"engine.eval_every={epochs}", *overrides],
                            out=str(out / recipe), leaderboard=False))
    rec = json.loads(path.read_text())
    last = rec["history"][-1]
    return {"test_acc": rec["metrics"]["test_acc"], "val_acc": last.get("val_acc"),
            "train_seconds": sum(h["seconds"] for h in rec["history"]),
            "seconds_per_epoch": float(np.median([h["seconds"] for h in rec["history"]])),
            "wall_seconds": rec["wall_time_s"], "device": rec["device"],
            "precision": rec["precision"]}


def summarise(runs: dict, targets: list[float]) -> dict:
    """Per schedule, mean and std over seeds; per target, the shortest schedule reaching it."""
    table = {}
    for epochs, by_seed in sorted(runs.items()):
        acc = np.array([r["test_acc"] for r in by_seed.values()])
        val = np.array([r["val_acc"] for r in by_seed.values() if r["val_acc"] is not None])
        secs = np.array([r["train_seconds"] for r in by_seed.values()])
        table[epochs] = {"seeds": len(acc), "test_acc": acc.mean(), "test_acc_std": acc.std(ddof=1)
                         if len(acc) > 1 else 0.0, "val_acc": val.mean() if len(val) else None,
                         "train_seconds": secs.mean(),
                         "train_seconds_std": secs.std(ddof=1) if len(secs) > 1 else 0.0}
    reached = {}
    for t in targets:
        hit = [e for e, row in table.items() if 100 * row["test_acc"] >= t]
        reached[t] = ({"epochs": min(hit), "train_seconds": table[min(hit)]["train_seconds"],
                       "train_seconds_std": table[min(hit)]["train_seconds_std"]}
                      if hit else None)
    return {"schedules": table, "time_to": reached}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--ferplus", default=str(here.parent / "shared/data/ferplus.tar.gz"))
    ap.add_argument("--data-root", default=None, help="an unpacked FERPlus (skips unpacking)")
    ap.add_argument("--recipes", default="fast,resnet18_s1")
    ap.add_argument("--epochs", default="2,4,6,8,10")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--targets", default="84,85,86")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="a run-config override for every run (engine.precision=fp32, lr=0.01)")
    ap.add_argument("--out", default="runs/time-to-accuracy")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    root = ferplus_root(args.data_root, args.ferplus)
    epochs = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    targets = [float(t) for t in args.targets.split(",")]
    out = {"targets": targets, "seeds": seeds, "overrides": args.override, "recipes": {}}
    for recipe in recipes:
        runs = {e: {s: one_run(root, recipe, e, s, args.device, Path(args.out), args.override)
                    for s in seeds} for e in epochs}
        summary = summarise(runs, targets)
        out["recipes"][recipe] = {"spec": RECIPES[recipe], "runs": runs, **summary}
        first = next(iter(next(iter(runs.values())).values()))
        print(f"\n{recipe}: final-epoch FERPlus test accuracy over seeds {seeds} "
              f"({first['device'].get('name')}, {first['precision']})")
        print(f"  {'epochs':>6} {'test acc %':>16} {'val acc %':>9} {'train s':>14} {'s/epoch':>8}")
        for e, row in summary["schedules"].items():
            val = "" if row["val_acc"] is None else f"{100 * row['val_acc']:.2f}"
            per_epoch = np.median([r["seconds_per_epoch"] for r in runs[e].values()])
            print(f"  {e:>6} {100 * row['test_acc']:9.2f} ± {100 * row['test_acc_std']:4.2f} "
                  f"{val:>9} {row['train_seconds']:8.1f} ± {row['train_seconds_std']:4.1f} "
                  f"{per_epoch:8.2f}", flush=True)
        for t, hit in summary["time_to"].items():
            print(f"  time to {t:g} %: " + (f"{hit['train_seconds']:.0f} ± "
                                            f"{hit['train_seconds_std']:.0f} s ({hit['epochs']} "
                                            f"epochs)" if hit else "not reached"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
