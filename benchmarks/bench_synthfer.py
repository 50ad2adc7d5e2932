"""synthfer figures: generation speed on one core, and what a small CNN learns in two CPU minutes.

    python benchmarks/bench_synthfer.py [--budget 120] [--threads 2] [--json PATH]

(a) images/s of `SynthFER` generation with torch and the process held to one
core; (b) test accuracy of a 4-layer CNN (plain torch, Adam, cosine schedule
over the wall-clock budget) trained on the default synthfer train split. It
asserts nothing: the spec wants (b) between 40% and 90%, and the figures say
whether the generator's difficulty knobs still land there. The ceiling printed
beside it is how often the drawn test label equals its distribution's mode,
what a perfect mode predictor would score.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn

from ferbench.datasets import open_dataset
from ferbench.datasets.synthfer import SynthFER


def generation_speed(n: int = 10_000, size: int = 48) -> dict:
    """Images per second of synthfer generation on one core (affinity pinned where possible)."""
    torch.set_num_threads(1)
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(before)})
    try:
        t0 = time.perf_counter()
        ds = open_dataset(SynthFER(), None, options={"n_train": n, "n_test": 1, "size": size})
        seconds = time.perf_counter() - t0
    finally:
        if pinned:
            os.sched_setaffinity(0, before)
    n_done = sum(len(s) for s in ds.splits.values())
    return {"images": n_done, "size": size, "seconds": round(seconds, 3),
            "images_per_s": round(n_done / seconds, 1), "one_core": pinned}


def small_cnn(classes: int) -> nn.Module:
    """Four 3x3 conv blocks (16-32-64-128 channels) and a linear head: ~100k parameters."""
    layers, c_in = [], 1
    for i, c in enumerate((16, 32, 64, 128)):
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        layers.append(nn.MaxPool2d(2) if i < 3 else nn.AdaptiveAvgPool2d(1))
        c_in = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in, classes))


def _tensor(samples) -> torch.Tensor:
    x = torch.from_numpy(np.stack([samples.source.read(i) for i in range(len(samples))]))
    return ((x.float() / 255 - 0.5) / 0.25).unsqueeze(1)


def train_cnn(budget_s: float | None = 120.0, threads: int = 2, n_train: int = 4000,
              n_test: int = 1000, seed: int = 0, options: dict | None = None,
              epochs: int | None = None) -> dict:
    """Train `small_cnn` on synthfer for `budget_s` wall-clock seconds; its test accuracy.

    With `epochs`, train for that many epochs instead (the same on any machine, which a
    test needs); the cosine learning-rate schedule runs over whichever budget is given.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    opts = {"n_train": n_train, "n_test": n_test, **(options or {})}
    ds = open_dataset(SynthFER(), None, options=opts)
    train, test = ds.split("train"), ds.split("test")
    x, y = _tensor(train), torch.from_numpy(train.labels)
    model = small_cnn(len(ds.classes))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    total_steps = epochs * math.ceil(len(x) / 64) if epochs else None
    t0, done_epochs, steps, done = time.perf_counter(), 0, 0, False
    while not done:
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            progress = steps / total_steps if epochs else (time.perf_counter() - t0) / budget_s
            if progress >= 1:
                done = True
                break
            for group in opt.param_groups:  # cosine decay, so any budget ends annealed
                group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * progress))
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        else:
            done_epochs += 1
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in _tensor(test).split(256)]).numpy()
    mode = test.extras["distribution"].argmax(1)
    return {"test_acc": round(float((pred == test.labels).mean()), 4),
            "test_acc_vs_mode": round(float((pred == mode).mean()), 4),
            "ceiling": round(float((mode == test.labels).mean()), 4),
            "chance": round(1 / len(ds.classes), 4), "classes": len(ds.classes),
            "n_train": len(train), "n_test": len(test), "epochs": done_epochs, "steps": steps,
            "train_seconds": round(train_s, 1), "threads": threads}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds (wall clock)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--n-gen", type=int, default=10_000, help="images for the speed figure")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--contempt", action="store_true", help="8 classes instead of 7")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    speed = generation_speed(args.n_gen)
    print(f"generation: {speed['images_per_s']:.0f} images/s at {speed['size']} px "
          f"({speed['images']} images in {speed['seconds']:.2f} s, one core: {speed['one_core']})")
    cnn = train_cnn(args.budget, args.threads, args.n_train, args.n_test,
                    options={"contempt": args.contempt})
    print(f"small CNN, {cnn['train_seconds']:.0f} s on {cnn['threads']} threads "
          f"({cnn['epochs']} epochs, {cnn['steps']} steps): test accuracy {cnn['test_acc']:.3f} "
          f"(vs distribution mode {cnn['test_acc_vs_mode']:.3f}; ceiling {cnn['ceiling']:.3f}, "
          f"chance {cnn['chance']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"generation": speed, "cnn": cnn, "torch": torch.__version__}, f, indent=2)


if __name__ == "__main__":
    main()
