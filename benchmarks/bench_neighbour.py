"""One training run sharing the CPU with a neighbour: the engine against the plain loop.

    python benchmarks/bench_neighbour.py [--size 112] [--n 640] [--rounds 3] [--json out.json]

A sweep's workers, or a user's second job, share the cores with a run. This measures
training images/s of ResNet-18 (batch 64, `--size` px) alone and beside a CPU-bound
neighbour (another process training the same model in a plain fp32 loop with torch's
default threads, started before and stopped after each measurement) for
(a) `ferbench run` (the engine at its defaults: precision and channels-last `auto`, the
    prefetch thread), timed on its second epoch, and
(b) the plain loop: a torch DataLoader (2 workers) augmenting uint8 images, fp32 training
    in the main process, timed after two warm-up batches.
Each path runs in its own process, in `--rounds` interleaved rounds (these shared cores
drift); the ratio beside / alone is taken within a round, and medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 64


def plain_loop(n: int, size: int, steps: int | None) -> float:
    """Images/s of the plain loop over `steps` batches (None: train until killed)."""
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch.utils.data import DataLoader, Dataset

    class Faces(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)
            self.y = torch.randint(0, 7, (n,), generator=g)

        def __len__(self):
            return n

        def __getitem__(self, i):
            x = self.x[i].float().div(255).expand(3, -1, -1)
            x = F.pad(x[None], [size // 8] * 4, mode="reflect")[0]
            a, b = torch.randint(0, size // 4 + 1, (2,))
            x = x[:, a:a + size, b:b + size]
            return (x.flip(-1) if torch.rand(()) < 0.5 else x), self.y[i]

    loader = DataLoader(Faces(), batch_size=BATCH, shuffle=True, num_workers=2,
                        drop_last=True, persistent_workers=True)
    model = torchvision.models.resnet18(num_classes=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    done, t0 = 0, None
    while True:
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            done += 1
            if done == 2:
                t0 = time.perf_counter()
            if steps is not None and done == steps + 2:
                return steps * BATCH / (time.perf_counter() - t0)


def engine(n: int, size: int, work: Path) -> float:
    """Images/s of `ferbench run` (the baseline's paper preset: ResNet-18) on its 2nd epoch."""
    out = work / f"engine-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "ferbench.cli", "run", "--method", "baseline",
           "--preset", "paper", "--image-size", str(size), "--batch-size", str(BATCH),
           "--epochs", "2", "-o", f"n_train={n}", "-o", "n_test=64", "--out", str(out),
           "--no-leaderboard", "--device", "cpu"]
    subprocess.run(cmd, check=True, capture_output=True)
    (result,) = out.rglob("seed0.json")
    return json.loads(result.read_text())["history"][-1]["images_per_s"]


def measure(path: str, args, work: Path, neighbour: bool) -> float:
    nb = None
    if neighbour:
        nb = subprocess.Popen([sys.executable, __file__, "--child", "neighbour",
                               "--size", str(args.size), "--n", str(args.n)])
        time.sleep(args.settle)  # the neighbour trains before the measurement starts
    try:
        if path == "engine":
            return engine(args.n, args.size, work)
        out = subprocess.run([sys.executable, __file__, "--child", "plain", "--size",
                              str(args.size), "--n", str(args.n), "--steps",
                              str(args.steps)], check=True, capture_output=True, text=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        if nb is not None:
            nb.kill()
            nb.wait()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--n", type=int, default=640, help="training images (engine: per epoch)")
    ap.add_argument("--steps", type=int, default=8, help="timed batches of the plain loop")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=float, default=8.0,
                    help="seconds the neighbour trains before a measurement")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "plain":
        print(plain_loop(args.n, args.size, args.steps))
        return
    if args.child == "neighbour":
        plain_loop(args.n, args.size, None)
        return
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("FERBENCH_CACHE", str(Path(tmp) / "cache"))
        engine(args.n, args.size, Path(tmp))  # decodes the cache once, outside any timing
        for r in range(args.rounds):
            row = {}
            for path in ("engine", "plain"):
                for nb in (False, True):
                    row[f"{path}_{'beside' if nb else 'alone'}"] = measure(path, args,
                                                                          Path(tmp), nb)
            for path in ("engine", "plain"):
                row[f"{path}_ratio"] = row[f"{path}_beside"] / row[f"{path}_alone"]
            rounds.append(row)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()),
                  flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    import torch

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{args.size} px, ResNet-18, batch {BATCH}, medians of {args.rounds} rounds (img/s):")
    for path in ("engine", "plain"):
        print(f"  {path:6s} alone {med[f'{path}_alone']:7.1f}  beside a neighbour "
              f"{med[f'{path}_beside']:7.1f}  ratio {med[f'{path}_ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rounds, "median": med,
                                               "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
