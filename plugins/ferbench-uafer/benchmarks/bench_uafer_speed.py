"""Training speed and peak memory of `uafer` against the limit of its towers alone.

    python plugins/ferbench-uafer/benchmarks/bench_uafer_speed.py
        [--preset quick|paper] [--batch N] [--steps 20] [--rounds 3] [--device auto]
        [--precision auto] [--json out.json] [-- KEY=VALUE ...]

Two arms on one batch held in memory, the same towers, optimiser and precision:
- `towers`: what any method on these towers must do per step: the student's forward and
  backward (loss: the sum of its projected class token and patch tokens), the frozen teacher's
  forward, one AdamW step over the same parameter groups;
- `uafer`: the method's own `training_step` (prompts' scores, per-class top-k, the evidential
  head and its loss, distillation) with the same backward and AdamW step.
Both arms run in one fresh process on the same model, in `--rounds` alternating blocks of
`--steps` steps, so the machine's drift falls on both; the ratio uafer / towers printed is the
median over the blocks of each block's ratio to its neighbour. Peak memory is
the GPU's `max_memory_allocated` on CUDA, the process's peak resident size on the CPU.
`--preset paper` builds ViT-B-16 at 224 px (random weights unless clip_weights=PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys


def build(args):
    import torch

    from ferbench.config import compose_run, to_method_config
    from ferbench.context import build_context
    from ferbench.datasets.base import open_dataset
    from ferbench.datasets.synthfer import SynthFER
    from ferbench.device import resolve_device, resolve_precision
    from ferbench.evaluation import Evaluator
    from ferbench.plugins import registry
    from ferbench.protocols import Clean, finish_view

    cls = registry().get("methods", "uafer")
    overrides = {"method.batch_size": args.batch} if args.batch else {}
    cfg = compose_run("uafer", cls, args.preset, overrides, list(args.overrides))
    mcfg = to_method_config(cls, cfg)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    n = max(64, int(mcfg.batch_size))
    ds = open_dataset(SynthFER(), None, None, {"n_train": n, "n_test": 16, "seed": 0})
    view = finish_view(Clean().apply(ds, {}), {})
    ctx, _, _ = build_context(view, mcfg, mode="L", device=device, precision=precision,
                              show_progress=False)
    method = cls(mcfg)
    model = method.build(ctx).to(device)
    Evaluator(method, ctx).bind(model)
    model.train()
    batch = next(iter(ctx.iterate("train", views=("none",), batch_size=int(mcfg.batch_size))))
    batch["views"] = {"weak": batch["views"]["none"]}
    return torch, method, ctx, model, batch, precision


def towers_loss(method, model, batch):
    x = method._pixels(batch["views"]["weak"])
    g, patches = model(x)
    if method.config.kd_weight > 0:
        model.teacher(x)  # the frozen teacher's forward, as uafer's step runs it
    return g.float().sum() + patches.float().sum()


def measure(args) -> dict:
    """One process, both arms on the same model and batch, in alternating blocks of `steps`
    steps (so the machine's drift falls on both); peak memory per arm on CUDA, the process's
    peak resident size on the CPU (run one arm per process for it)."""
    torch, method, ctx, model, batch, precision = build(args)
    (spec,) = method.configure_optimizers(model, ctx)
    opt = spec.optimizer
    for g in opt.param_groups:  # a constant, non-zero rate: warm-up's first step is at 0
        g["lr"] = 1e-6
    cuda = ctx.device.type == "cuda"

    def step(name):
        opt.zero_grad(set_to_none=True)
        with ctx.autocast():
            loss = method.training_step(model, batch, ctx) if name == "uafer" \
                else towers_loss(method, model, batch)
        loss.backward()
        opt.step()

    from ferbench.testing import time_alternating

    arms = [args.arm] if args.arm != "both" else ["towers", "uafer"]
    seconds, peak = time_alternating(step, arms, args.rounds, args.steps, ctx.device, warmup=3)
    if not cuda:
        peak = {a: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 for a in arms}
    n = args.steps * len(batch["label"])
    return {"images_per_s": {a: [n / t for t in seconds[a]] for a in arms},
            "peak_memory_mib": {a: peak[a] / 2**20 for a in arms}, "precision": precision,
            "device": ctx.device.type, "batch": len(batch["label"]),
            "image_size": ctx.image_size, "clip_arch": method.config.clip_arch}


def child(args, arm_name, steps, rounds):
    cmd = [sys.executable, os.path.abspath(__file__), "--preset", args.preset, "--batch",
           str(args.batch), "--steps", str(steps), "--rounds", str(rounds), "--device",
           args.device, "--precision", args.precision, "--arm", arm_name, "--",
           *args.overrides]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(out.returncode)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--batch", type=int, default=0, help="batch size (default: the preset's)")
    p.add_argument("--steps", type=int, default=20, help="steps per block")
    p.add_argument("--rounds", type=int, default=6, help="blocks per arm, alternating")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--json")
    p.add_argument("--arm", choices=("uafer", "towers", "both"), help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if args.arm:
        print(json.dumps(measure(args)))
        return 0
    speed = child(args, "both", args.steps, args.rounds)
    peak = speed["peak_memory_mib"]
    if speed["device"] != "cuda":  # the CPU's peak resident size needs a process per arm
        peak = {a: child(args, a, 2, 1)["peak_memory_mib"][a] for a in ("towers", "uafer")}
    ips = speed["images_per_s"]
    ratios = [u / t for u, t in zip(ips["uafer"], ips["towers"])]
    med = {a: statistics.median(v) for a, v in ips.items()}
    ratio = statistics.median(ratios)
    print(f"{speed['clip_arch']} at {speed['image_size']} px, batch {speed['batch']}, "
          f"{speed['precision']} on {speed['device']} ({args.rounds} alternating blocks of "
          f"{args.steps} steps per arm)")
    for a in ("towers", "uafer"):
        print(f"  {a:6s} {med[a]:8.1f} img/s (median block)   peak memory {peak[a]:8.0f} MiB")
    print(f"  uafer / towers = {ratio:.3f}, median of the blocks' ratios "
          f"({', '.join(f'{r:.2f}' for r in ratios)}); target >= 0.9")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**speed, "peak_memory_mib": peak, "block_ratios": ratios,
                       "ratio": ratio}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
