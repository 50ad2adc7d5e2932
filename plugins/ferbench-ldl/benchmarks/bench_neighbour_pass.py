"""Training speed of LDLVA's two neighbour passes against the baseline, in one run.

    python plugins/ferbench-ldl/benchmarks/bench_neighbour_pass.py
        [--dataset synthfer] [--data-root DIR] [--preset quick] [--epochs 3]
        [--rounds 2] [--device auto] [--json out.json] [-- KEY=VALUE ...]

Three arms on the same backbone, image size and batch (those of `ldlva`'s preset, passed
to the baseline too): `baseline`, `ldlva` with `neighbour_pass=cache`, and `ldlva` with
`neighbour_pass=forward` (the official code's: 1 + K forwards per step, K of them without
gradient). Each arm is a whole `ferbench run` of `--epochs` epochs; its training images/s
is the median over its epochs after the first (warm-up), read from the stored history.
The arms run in `--rounds` interleaved rounds; the ratios to the baseline are taken within
a round and their median printed. On CUDA the peak GPU memory of each arm is printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path


def arm_runs(args):
    from ferbench.plugins import registry

    preset = args.preset or "quick"
    ldlva = registry().methods["ldlva"].obj
    p = {**ldlva.presets.get(preset, {})}
    cfg = ldlva.Config(**p)
    shared = [f"backbone={cfg.backbone}", f"image_size={cfg.image_size}",
              f"batch_size={cfg.batch_size}"]
    # A user's key that the baseline has (backbone, image_size, ...) goes to every arm; an
    # LDLVA key (aux_space, k, ...) to the two LDLVA arms only.
    base_keys = {f.name for f in dataclasses.fields(registry().methods["baseline"].obj.Config)}
    common = [o for o in args.overrides if o.split("=", 1)[0] in base_keys]
    return preset, [
        ("baseline", "baseline", shared + common),
        ("ldlva cache", "ldlva", shared + list(args.overrides) + ["neighbour_pass=cache"]),
        ("ldlva forward", "ldlva", shared + list(args.overrides) + ["neighbour_pass=forward"]),
    ]


def run_arm(method, overrides, args, preset, seed, out):
    import torch

    from ferbench.planning import RunRequest
    from ferbench.runner import run

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    flags = {"epochs": args.epochs}
    if args.device != "auto":
        flags["device"] = args.device
    req = RunRequest(methods=[method], dataset=args.dataset, data_root=args.data_root,
                     protocols=[args.protocol], seeds=[seed], preset=preset, flags=flags,
                     overrides=list(overrides), out=str(out),
                     leaderboard=False, show_progress=False)
    path = run(req)[0]
    rec = json.loads(Path(path).read_text())
    rates = [h["images_per_s"] for h in rec["history"][1:]] or \
        [h["images_per_s"] for h in rec["history"]]
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {"images_per_s": statistics.median(rates), "peak_gib": peak,
            "test_acc": rec["metrics"]["test_acc"],
            "noise_auroc": rec["metrics"].get("train_noise_auroc"),
            "device": rec["device"], "precision": rec["precision"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="synthfer")
    ap.add_argument("--data-root")
    ap.add_argument("--protocol", default="noise30")
    ap.add_argument("--preset")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE for every arm")
    args = ap.parse_args(argv)
    preset, arms = arm_runs(args)
    out = Path(tempfile.mkdtemp(prefix="ferbench-bench-ldl-"))
    rows = {name: [] for name, _, _ in arms}
    for r in range(args.rounds):
        for name, method, overrides in arms:
            res = run_arm(method, overrides, args, preset, seed=r, out=out)
            rows[name].append(res)
            auroc = res["noise_auroc"]
            print(f"round {r + 1}: {name:14s} {res['images_per_s']:8.0f} img/s"
                  + (f" · peak {res['peak_gib']:.2f} GiB" if res["peak_gib"] else "")
                  + f" · test acc {100 * res['test_acc']:.2f}"
                  + (f" · noise AUROC {auroc:.3f}" if auroc is not None else ""), flush=True)
    base = rows["baseline"]
    first = base[0]
    print(f"\n{args.dataset} · {args.protocol} · preset {preset} · {args.epochs} epochs · "
          f"{first['precision']} on {first['device'].get('name', first['device'])}")
    print(f"{'arm':14s} {'img/s':>8s} {'× baseline time':>16s} {'peak GiB':>9s}")
    summary = {}
    for name, res in rows.items():
        rate = statistics.median(x["images_per_s"] for x in res)
        cost = statistics.median(b["images_per_s"] / x["images_per_s"]
                                 for b, x in zip(base, res))
        peak = max((x["peak_gib"] or 0) for x in res) or None
        summary[name] = {"images_per_s": rate, "time_vs_baseline": cost, "peak_gib": peak,
                         "rounds": res}
        print(f"{name:14s} {rate:8.0f} {cost:16.2f} {peak if peak else float('nan'):9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    from ferbench.errors import FerbenchError

    try:
        sys.exit(main())
    except FerbenchError as e:
        print(f"bench_neighbour_pass: {e}", file=sys.stderr)
        sys.exit(2)
