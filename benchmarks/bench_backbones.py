"""Cost and training speed of ferbench's backbones: parameters, multiply-adds, images/s.

    python benchmarks/bench_backbones.py [--models ferbench_resnet_tiny,...] [--size 48]
        [--batch 128] [--steps 6] [--device cpu] [--compile] [--json out.json]

One SGD training step at a time on one batch already in memory (the model alone, fp32), after
two warm-up steps; then the time one FERPlus training epoch (25,045 faces) would take at that rate.
With --compile, each model is also measured through torch.compile (what `engine.compile=true`
does), with the seconds its warm-up steps took (the compilation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import ferbench.models  # noqa: F401  (registers the backbones with timm)

FAMILY = "ferbench_resnet_tiny,ferbench_resnet_small,ferbench_resnet_base,ferbench_resnet18_s1"
FERPLUS_TRAIN = 25_045


def measure(name: str, size: int, batch: int, steps: int, device: torch.device,
            compiled: bool = False) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=8).to(device)
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size, device=device))
    forward = torch.compile(model) if compiled else model
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 8, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    warmup = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ips = steps * batch / (time.perf_counter() - t)
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "macs_m": counter.get_total_flops() / 2e6, "images_per_s": ips,
            "ferplus_epoch_s": FERPLUS_TRAIN / ips, "warmup_s": warmup}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=FAMILY)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true",
                    help="also measure each model through torch.compile")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    out = {"size": args.size, "batch": args.batch, "device": str(device),
           "threads": torch.get_num_threads(), "models": {}}
    print(f"{'model':24s} {'params':>8s} {'MACs':>10s} {'img/s':>8s} {'FERPlus epoch':>14s}"
          + (f" {'compiled img/s':>15s} {'ratio':>6s} {'compile':>8s}" if args.compile else ""))
    for name in args.models.split(","):
        r = out["models"][name] = measure(name, args.size, args.batch, args.steps, device)
        line = (f"{name:24s} {r['params_m']:6.2f} M {r['macs_m']:8.1f} M "
                f"{r['images_per_s']:8.0f} {r['ferplus_epoch_s']:12.1f} s")
        if args.compile:
            c = r["compiled"] = measure(name, args.size, args.batch, args.steps, device, True)
            line += (f" {c['images_per_s']:15.0f} {c['images_per_s'] / r['images_per_s']:5.2f}x"
                     f" {c['warmup_s']:6.1f} s")
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
