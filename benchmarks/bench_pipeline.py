"""Input pipeline and training throughput, ferbench against the usual loop, side by side.

    python benchmarks/bench_pipeline.py [--fer2013 ../shared/data/fer2013.tar.gz]
        [--sizes 48,112] [--steps 30] [--json out.json]

On the real FER2013 train split (the image-folder export), at each size:
(a) augmented images/s of the input pipeline alone: torchvision ImageFolder +
    PIL transforms + DataLoader at its best worker count, against ferbench's
    decoded cache + batched `weak` view;
(b) training images/s of ResNet-18 at batch 64: the plain fp32 loop, the
    ferbench engine at default settings (precision `auto`), and the model alone
    stepping on one batch already in memory, in fp32 and in the engine's
    precision (the limit).
Prints every figure and ratio; `--json` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BATCH = 64


def unpack(archive: Path) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="ferbench-bench-"))
    if shutil.which("tar"):  # far faster than tarfile on 35k small files
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest / "fer2013"


def plain_loader(root: Path, size: int, workers: int):
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Grayscale(3), transforms.Resize(size),
        transforms.RandomCrop(size, padding=size // 8, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(str(root / "train"), transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def time_batches(batches, steps: int, step=None) -> float:
    """Images/s over `steps` batches after two warm-up batches."""
    it = iter(batches)
    for _ in range(2):
        x, y = next(it)
        if step:
            step(x, y)
    t = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        if step:
            step(x, y)
    return steps * BATCH / (time.perf_counter() - t)


def ferbench_batches(cache, labels, gen, view="weak"):
    from ferbench.data.augment import apply_view
    from ferbench.nn import normalize

    n = len(cache)
    while True:
        idx = torch.randint(0, n, (BATCH,), generator=gen).numpy()
        order = np.sort(idx)
        x = apply_view(view, torch.from_numpy(np.asarray(cache[order])), gen)
        yield normalize(x), torch.from_numpy(labels[order])


def make_step(model, precision: str):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def resnet18():
    import timm

    return timm.create_model("resnet18", num_classes=7)


def engine_throughput(root: Path, size: int, steps: int) -> tuple[float, str]:
    """Images/s of the ferbench engine training the baseline (ResNet-18) for one short epoch."""
    from ferbench.config import compose_run, to_method_config
    from ferbench.datasets.base import open_dataset
    from ferbench.device import resolve_device, resolve_precision
    from ferbench.engine import Engine
    from ferbench.methods.baseline import Baseline
    from ferbench.plugins import registry
    from ferbench.protocols import Clean, finish_view
    from ferbench.runner import _context

    ds = open_dataset(registry().get("datasets", "fer2013"), root)
    view = finish_view(Clean().apply(ds, {}), {})
    keep = np.random.default_rng(0).choice(len(view.train), (steps + 2) * BATCH, replace=False)
    view.train, view.train_labels = view.train.subset(keep), view.train_labels[keep]
    view.test, view.test_labels = view.test.subset(np.arange(64)), view.test_labels[:64]
    cfg = compose_run("baseline", Baseline, "paper",
                      {"method.image_size": size, "method.epochs": 1, "method.batch_size": BATCH},
                      [])
    mcfg = to_method_config(Baseline, cfg)
    device = resolve_device("cpu")
    precision = resolve_precision("auto", device)
    ctx, _ = _context(view, mcfg, "L", device, precision, show=False)
    engine = Engine(Baseline(mcfg), ctx, seed=0, test_labels=view.test_labels, val_labels=None,
                    checkpoint_dir=None, resume=False, eval_every=0,
                    channels_last=precision == "bf16", show_progress=False)
    res = engine.fit()
    return res.history[-1]["images_per_s"], precision


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--fer2013", default=str(here.parent / "shared/data/fer2013.tar.gz"))
    ap.add_argument("--sizes", default="48,112")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    archive = Path(args.fer2013)
    if not archive.exists():
        raise SystemExit(f"{archive}: FER2013 archive not found; pass --fer2013 PATH")
    os.environ.setdefault("FERBENCH_CACHE", tempfile.mkdtemp(prefix="ferbench-cache-"))
    root = unpack(archive)
    from ferbench.data.cache import load_cached
    from ferbench.datasets.base import open_dataset
    from ferbench.device import resolve_device, resolve_precision
    from ferbench.plugins import registry
    from ferbench.protocols import to_run_labels

    ds = open_dataset(registry().get("datasets", "fer2013"), root)
    train = ds.split("train")
    labels = to_run_labels(train, ds.classes)
    engine_precision = resolve_precision("auto", resolve_device("cpu"))
    out = {"cores": os.cpu_count(), "torch": torch.__version__, "batch": BATCH,
           "engine_precision": engine_precision, "sizes": {}}
    for size in [int(s) for s in args.sizes.split(",")]:
        r: dict = {}
        cache = load_cached(train, size, "L", show_progress=False).images
        gen = torch.Generator().manual_seed(0)
        r["pipeline_ferbench"] = time_batches(ferbench_batches(cache, labels, gen), args.steps * 4)
        best = (0.0, 0)
        for workers in sorted({0, 1, 2, os.cpu_count() or 1}):
            ips = time_batches(plain_loader(root, size, workers), args.steps * 2)
            r[f"pipeline_plain_w{workers}"] = ips
            best = max(best, (ips, workers))
        r["pipeline_plain_best"], r["plain_best_workers"] = best
        r["pipeline_ratio"] = r["pipeline_ferbench"] / best[0]
        torch.manual_seed(0)
        r["train_plain_fp32"] = time_batches(plain_loader(root, size, best[1]), args.steps,
                                             make_step(resnet18(), "fp32"))
        x, y = next(ferbench_batches(cache, labels, gen))
        one = [(x, y)] * (args.steps + 2)
        r["model_alone_fp32"] = time_batches(one, args.steps, make_step(resnet18(), "fp32"))
        if engine_precision != "fp32":
            r[f"model_alone_{engine_precision}"] = time_batches(
                one, args.steps, make_step(resnet18(), engine_precision))
        r["train_engine"], _ = engine_throughput(root, size, args.steps)
        limit = r[f"model_alone_{engine_precision}"]
        r["engine_vs_limit"] = r["train_engine"] / limit
        r["engine_vs_plain_fp32"] = r["train_engine"] / r["train_plain_fp32"]
        out["sizes"][size] = r
        print(f"\n{size} px (batch {BATCH}, {out['cores']} cores, engine precision "
              f"{engine_precision})")
        for k, v in r.items():
            print(f"  {k:24s} {v:10.2f}" if isinstance(v, float) else f"  {k:24s} {v:>10}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
