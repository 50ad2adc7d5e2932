"""Training speed of ESR and MA-Net, with and without the diversity term, against a plain
ResNet-18 at the same image size.

    python plugins/ferbench-diversified/benchmarks/bench_diversified_speed.py
        [--arch esr,manet] [--sizes paper,48] [--batch 16] [--steps 3] [--rounds 2]
        [--device auto] [--precision auto] [--json out.json]

For each architecture and size, three arms train on one batch held in memory with the same
optimiser and precision, in `--rounds` alternating blocks of `--steps` steps (so the
machine's drift falls on every arm):
- `div`: the `-div` method's own `training_step` (CE of every branch + the diversity term);
- `plain`: the same model and step with the term's weight at 0 (the plain method);
- `resnet18`: the baseline method's step on timm's ResNet-18.
ESR runs with all its branches active (its last, costliest phase); at 48 px ESR is padded.
The term's cost is (t_with − t_without) / t_with per pair of blocks, the median. Peak memory is the
GPU's `max_memory_allocated` on CUDA (not measured on the CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics

PAPER = {"esr": ("esr-div", 96, ["backbone=ferbench_esr", "n_branches=9", "padded=false"]),
         "manet": ("manet-div", 224, ["backbone=ferbench_manet"])}


def setup(name, size, overrides, batch, device, precision):
    import torch

    from ferbench import view_name
    from ferbench.config import compose_run, to_method_config
    from ferbench.context import build_context
    from ferbench.datasets.base import open_dataset
    from ferbench.datasets.synthfer import SynthFER
    from ferbench.evaluation import Evaluator
    from ferbench.plugins import registry
    from ferbench.protocols import Clean, finish_view

    cls = registry().get("methods", name)
    over = {"method.image_size": size, "method.batch_size": batch, "method.epochs": 200}
    if name.startswith("esr"):
        overrides = [*overrides, "training=joint"]
    cfg = compose_run(name, cls, "paper", over, [f"method.{o}" for o in overrides])
    mcfg = to_method_config(cls, cfg)
    ds = open_dataset(SynthFER(), None, None, {"n_train": batch, "n_test": 8, "seed": 0,
                                               "size": 48})
    ctx, _, _ = build_context(finish_view(Clean().apply(ds, {}), {}), mcfg, mode="L",
                              device=device, precision=precision, show_progress=False)
    method = cls(mcfg)
    torch.manual_seed(0)
    model = method.build(ctx).to(device).train()
    Evaluator(method, ctx).bind(model)
    ctx.phase = (method.phases(ctx) or [None])[-1]
    if ctx.phase is not None:
        method.on_phase_start(model, ctx, ctx.phase)
    (spec,) = method.configure_optimizers(model, ctx) or [None]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, ctx.num_classes, (batch,), generator=g).to(device)
    views = {view_name(v): x for v in mcfg.views}
    return method, ctx, model, spec.optimizer if spec else None, {"views": views, "label": y}


def measure(arch, size, args, device, precision) -> dict:
    import torch

    name, paper_size, overrides = PAPER[arch]
    size = paper_size if size == "paper" else int(size)
    if arch == "esr" and size < 54:
        overrides = [o for o in overrides if not o.startswith("padded")] + ["padded=true"]
    method, ctx, model, opt, batch = setup(name, size, overrides, args.batch, device, precision)
    base, bctx, bmodel, _, bbatch = setup("baseline", size, ["backbone=resnet18"], args.batch,
                                          device, precision)
    bopt = torch.optim.SGD(bmodel.parameters(), lr=1e-6, momentum=0.9)
    for group in opt.param_groups:
        group["lr"] = 1e-6
    weight = method.config.diversity_weight

    def step(arm):
        o, m, mod, c, b = (bopt, base, bmodel, bctx, bbatch) if arm == "resnet18" else \
            (opt, method, model, ctx, batch)
        method.config.diversity_weight = weight if arm == "div" else 0.0
        o.zero_grad(set_to_none=True)
        with c.autocast():
            loss = m.training_step(mod, b, c)
        loss.backward()
        o.step()

    from ferbench.testing import time_alternating

    arms = ["div", "plain", "resnet18"]
    cuda = device.type == "cuda"
    seconds, peak = time_alternating(step, arms, args.rounds, args.steps, device)
    peak = {a: b / 2**20 for a, b in peak.items()}
    method.config.diversity_weight = weight
    n = args.steps * args.batch
    ips = {a: statistics.median(n / t for t in seconds[a]) for a in arms}
    # the term's share of a step: (t_with − t_without) / t_with, per pair of blocks
    cost = statistics.median((d - p) / d for d, p in zip(seconds["div"], seconds["plain"]))
    return {"arch": arch, "image_size": size, "batch": args.batch, "images_per_s": ips,
            "term_share_of_step": cost, "peak_memory_mib": peak if cuda else None}


def main(argv=None):
    import torch

    from ferbench.device import resolve_device, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="esr,manet")
    ap.add_argument("--sizes", default="paper,48")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    print(f"{device.type} · {precision} · {torch.get_num_threads()} threads · batch "
          f"{args.batch} · {args.rounds} × {args.steps} steps per arm")
    rows = []
    for arch in args.arch.split(","):
        for size in args.sizes.split(","):
            r = measure(arch, size, args, device, precision)
            rows.append(r)
            ips = r["images_per_s"]
            mem = "" if r["peak_memory_mib"] is None else "  peak MiB " + " / ".join(
                f"{r['peak_memory_mib'][a]:.0f}" for a in ("div", "plain", "resnet18"))
            print(f"{arch:6s} {r['image_size']:4d} px  img/s: with term {ips['div']:8.1f}  "
                  f"without {ips['plain']:8.1f}  ResNet-18 {ips['resnet18']:8.1f}  "
                  f"term share of a step {100 * r['term_share_of_step']:5.1f} %{mem}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.type, "precision": precision, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
