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
Each arm runs in a fresh process (so peak memory is its own), `--rounds` times, alternating;
images/s is the median over rounds and the ratio uafer / towers is printed. Peak memory is
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
import time


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
    loss = g.float().sum() + patches.float().sum()
    if method.config.kd_weight > 0:
        loss = loss + 0.0 * model.teacher(x).float().sum()
    return loss


def arm(args) -> dict:
    torch, method, ctx, model, batch, precision = build(args)
    (spec,) = method.configure_optimizers(model, ctx)
    opt = spec.optimizer
    for g in opt.param_groups:  # a constant, non-zero rate: warm-up's first step is at 0
        g["lr"] = 1e-6
    cuda = ctx.device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with ctx.autocast():
            loss = method.training_step(model, batch, ctx) if args.arm == "uafer" \
                else towers_loss(method, model, batch)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"arm": args.arm, "images_per_s": args.steps * len(batch["label"]) / seconds,
            "peak_memory_mib": peak / 2**20, "precision": precision,
            "device": ctx.device.type, "batch": len(batch["label"]),
            "image_size": ctx.image_size, "clip_arch": method.config.clip_arch}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--batch", type=int, default=0, help="batch size (default: the preset's)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--json")
    p.add_argument("--arm", choices=("uafer", "towers"), help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if args.arm:
        print(json.dumps(arm(args)))
        return 0
    rows = {"uafer": [], "towers": []}
    base = [sys.executable, os.path.abspath(__file__), "--preset", args.preset, "--batch",
            str(args.batch), "--steps", str(args.steps), "--device", args.device,
            "--precision", args.precision]
    for r in range(args.rounds):
        for name in (("towers", "uafer") if r % 2 == 0 else ("uafer", "towers")):
            out = subprocess.run([*base, "--arm", name, "--", *args.overrides],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.stderr.write(out.stderr[-3000:])
                return out.returncode
            rows[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {name:6s} {rows[name][-1]['images_per_s']:8.1f} img/s  "
                  f"peak {rows[name][-1]['peak_memory_mib']:8.0f} MiB", flush=True)
    med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in rows.items()}
    peak = {k: max(x["peak_memory_mib"] for x in v) for k, v in rows.items()}
    first = rows["uafer"][0]
    print(f"\n{first['clip_arch']} at {first['image_size']} px, batch {first['batch']}, "
          f"{first['precision']} on {first['device']} (median of {args.rounds} rounds)")
    for k in ("towers", "uafer"):
        print(f"  {k:6s} {med[k]:8.1f} img/s   peak memory {peak[k]:8.0f} MiB")
    ratio = med["uafer"] / med["towers"]
    print(f"  uafer / towers = {ratio:.3f} (target >= 0.9)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "median_images_per_s": med, "peak_memory_mib": peak,
                       "ratio": ratio}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
