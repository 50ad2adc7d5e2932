"""Input pipeline, training throughput and memory: ferbench against the usual loop, side by side.

    python benchmarks/bench_pipeline.py [--fer2013 ../shared/data/fer2013.tar.gz]
        [--sizes 48,112] [--steps 30] [--rounds 3] [--scale 10000,100000,1000000]
        [--json out.json]

On the real FER2013 train split (the image-folder export), at each size:
(a) augmented images/s of the input pipeline alone: torchvision ImageFolder +
    PIL transforms + DataLoader at its best worker count, against ferbench's
    decoded cache + batched `weak` view;
(b) training images/s of ResNet-18 at batch 64: the plain fp32 loop, the
    ferbench engine at default settings (precision and channels-last `auto`),
    and the model alone stepping on one batch already in memory, in plain fp32
    and in the engine's precision and memory format (the limit); each timed over
    `--steps` batches after a warm-up (the engine: its second epoch), in
    `--rounds` interleaved rounds, ratios taken within a round, medians reported;
(c) peak anonymous resident memory (Pss_Anon: not file-backed, so the page cache
    and the memory-mapped image cache do not count) of each of those paths, each
    run in its own process (DataLoader workers included), and the decoded
    cache's size on disk against the raw uint8 size of its images;
(d) peak anonymous resident memory of a one-epoch `ferbench run` on cached
    synthfer sets of growing size at 48 px, with a one-layer model so that the
    data path and the engine's bookkeeping, not the network, set the figure.
Prints every figure and ratio; `--json` writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BATCH = 64


# ---------------------------------------------------------------- memory of a process tree

def _anon_bytes(pid: int) -> int:
    """Anonymous resident memory of a process and all its descendants (DataLoader workers),
    in bytes: Pss_Anon, so pages a forked worker still shares with its parent count once."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss_Anon:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the process ended between two reads
            continue
    return total


def run_child(args: list[str], env: dict) -> tuple[dict, int]:
    """Run this script in child mode; return its JSON answer and its peak anonymous memory."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], env=env,
                            stdout=subprocess.PIPE, text=True)
    peak = [0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], _anon_bytes(proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"child {' '.join(args)} failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak[0]


# ---------------------------------------------------------------- the paths (child side)

def plain_loader(root: Path, size: int, workers: int):
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Grayscale(3), transforms.Resize(size),
        transforms.RandomCrop(size, padding=size // 8, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = datasets.ImageFolder(str(root / "train"), transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0,
                                       pin_memory=torch.cuda.is_available())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(batches, steps: int, step=None, device=torch.device("cpu")) -> float:
    """Images/s over `steps` batches after a few warm-up batches (device work included)."""
    it = iter(batches)
    for _ in range(2 if device.type == "cpu" else 5):
        x, y = next(it)
        if step:
            step(x, y)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        if step:
            step(x, y)
    _sync(device)
    return steps * BATCH / (time.perf_counter() - t)


def ferbench_batches(cache, labels, device, view="weak"):
    """What the engine does per batch: gather from the cache (on a GPU, from its resident
    copy), then the view on the device."""
    from ferbench.data.augment import apply_view
    from ferbench.data.feeder import ImageFeeder
    from ferbench.nn import normalize

    feeder = ImageFeeder(cache, device)
    labels = torch.from_numpy(np.asarray(labels)).to(device)
    order_gen = torch.Generator().manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0)
    n = len(cache)
    while True:
        idx = torch.randint(0, n, (BATCH,), generator=order_gen)
        x = apply_view(view, feeder.gather(idx), gen)
        yield normalize(x), labels[idx.to(device)]


def make_step(model, precision: str, channels_last: bool = False,
              device=torch.device("cpu")):
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def resnet18():
    import timm

    return timm.create_model("resnet18", num_classes=7)


def fer2013_train(root: Path, size: int):
    from ferbench.data.cache import load_cached
    from ferbench.datasets.base import open_dataset
    from ferbench.plugins import registry
    from ferbench.protocols import to_run_labels

    ds = open_dataset(registry().get("datasets", "fer2013"), root)
    train = ds.split("train")
    cached = load_cached(train, size, "L", show_progress=False)
    return ds, train, cached, to_run_labels(train, ds.classes)


def engine_throughput(root: Path, size: int, steps: int, device: torch.device) -> float:
    """Images/s of the ferbench engine training the baseline (ResNet-18) for one short epoch."""
    from ferbench.config import compose_run, to_method_config
    from ferbench.datasets.base import open_dataset
    from ferbench.device import resolve_channels_last, resolve_precision
    from ferbench.engine import Engine
    from ferbench.methods.baseline import Baseline
    from ferbench.plugins import registry
    from ferbench.protocols import Clean, finish_view
    from ferbench.context import build_context

    ds = open_dataset(registry().get("datasets", "fer2013"), root)
    view = finish_view(Clean().apply(ds, {}), {})
    keep = np.random.default_rng(0).choice(len(view.train), steps * BATCH, replace=False)
    view.train, view.train_labels = view.train.subset(keep), view.train_labels[keep]
    view.test, view.test_labels = view.test.subset(np.arange(64)), view.test_labels[:64]
    # The first epoch warms up (first steps, allocator, on a GPU cuDNN's algorithm search)
    # as the other paths' warm-up batches do: time the second.
    cfg = compose_run("baseline", Baseline, "paper",
                      {"method.image_size": size, "method.epochs": 2,
                       "method.batch_size": BATCH}, [])
    mcfg = to_method_config(Baseline, cfg)
    precision = resolve_precision("auto", device)
    ctx, test, _ = build_context(view, mcfg, mode="L", device=device, precision=precision,
                                 show_progress=False)
    engine = Engine(Baseline(mcfg), ctx, test=test, seed=0, checkpoint_dir=None, eval_every=0,
                    channels_last=resolve_channels_last("auto", device, precision),
                    show_progress=False)
    return engine.fit().history[-1]["images_per_s"]


def register_one_layer_model():
    """A one-layer classifier registered with timm, for (d): the network costs nothing."""
    import timm.models
    from torch import nn

    if "bench_one_layer" in timm.list_models("bench_one_layer"):
        return

    @timm.models.register_model
    def bench_one_layer(pretrained=False, num_classes=7, in_chans=3, **kwargs):
        return nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten(),
                             nn.Linear(in_chans * 64, num_classes))


def synthfer_epoch(n: int, out: Path, prepare: bool) -> dict:
    """One epoch of `ferbench run` on synthfer with n training faces (prepare: cache only)."""
    from ferbench.data.cache import load_cached
    from ferbench.datasets.base import open_dataset
    from ferbench.plugins import registry
    from ferbench.runner import RunRequest, run

    options = {"n_train": n, "n_test": 1000}
    if prepare:
        ds = open_dataset(registry().get("datasets", "synthfer"), None, options=options)
        sizes = {}
        for split in ("train", "test"):
            c = load_cached(ds.split(split), 48, "L", show_progress=False)
            sizes[split] = {"disk": sum(f.stat().st_size for f in c.path.iterdir()),
                            "raw": int(np.prod(c.images.shape))}
        return sizes
    register_one_layer_model()
    t = time.perf_counter()
    run(RunRequest(methods=["baseline"], dataset="synthfer", data_options=options,
                   preset="quick", out=str(out), leaderboard=False, show_progress=False,
                   flags={"epochs": 1, "backbone": "bench_one_layer", "batch_size": 256},
                   overrides=["engine.eval_every=0"]))
    return {"seconds": time.perf_counter() - t}


def child(args) -> dict:
    torch.manual_seed(0)
    root, size, steps, path = Path(args.root or "."), args.size, args.steps, args.child
    if path in ("synthfer_prepare", "synthfer_epoch"):
        return synthfer_epoch(args.n, root, prepare=path == "synthfer_prepare")
    from ferbench.device import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine does
    answer = child_path(path, root, size, steps, device)
    if device.type == "cuda":
        answer["gpu_peak_mib"] = mib(torch.cuda.max_memory_allocated(device))
    return answer


def on_device(batches, device):
    """The plain loader's batches as a training step receives them: on the device."""
    for x, y in batches:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def child_path(path: str, root: Path, size: int, steps: int, device: torch.device) -> dict:
    from ferbench.device import resolve_channels_last, resolve_precision

    if path == "pipeline_ferbench":
        _, _, cached, labels = fer2013_train(root, size)
        return {"ips": time_batches(ferbench_batches(cached.images, labels, device), steps * 4,
                                    device=device)}
    if path.startswith("pipeline_plain_w"):
        return {"ips": time_batches(on_device(plain_loader(root, size, int(path[16:])), device),
                                    steps * 2, device=device)}
    if path.startswith("train_plain_fp32_w"):
        return {"ips": time_batches(plain_loader(root, size, int(path[18:])), steps,
                                    make_step(resnet18(), "fp32", device=device), device)}
    if path.startswith("model_alone_"):  # model_alone_fp32, model_alone_engine
        _, _, cached, labels = fer2013_train(root, size)
        x, y = next(ferbench_batches(cached.images, labels, device))
        one = [(x, y)] * (steps + 5)
        if path == "model_alone_engine":
            precision = resolve_precision("auto", device)
            step = make_step(resnet18(), precision,
                             resolve_channels_last("auto", device, precision), device)
        else:
            step = make_step(resnet18(), "fp32", device=device)
        return {"ips": time_batches(one, steps, step, device)}
    if path == "train_engine":
        return {"ips": engine_throughput(root, size, steps, device)}
    if path == "cache_size":
        _, _, cached, _ = fer2013_train(root, size)
        return {"disk": sum(f.stat().st_size for f in cached.path.iterdir()),
                "raw": int(np.prod(cached.images.shape))}
    raise SystemExit(f"unknown path {path}")


# ---------------------------------------------------------------- the comparison (parent side)

def unpack(archive: Path) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="ferbench-bench-"))
    if shutil.which("tar"):  # far faster than tarfile on 35k small files
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest)], check=True)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest / "fer2013"


def mib(b: int) -> float:
    return b / 2 ** 20


def compare_size(root: Path, size: int, steps: int, env: dict, common: list[str],
                 workers: list[int], rounds: int) -> dict:
    r: dict = {}

    def measure(name: str, key: str | None = None) -> float:
        ans, peak = run_child([name, "--root", str(root), "--size", str(size),
                               "--steps", str(steps), *common], env)
        r[key or name] = ans["ips"]
        r[f"anon_mib_{key or name}"] = max(mib(peak), r.get(f"anon_mib_{key or name}", 0.0))
        if "gpu_peak_mib" in ans:
            r[f"gpu_mib_{key or name}"] = ans["gpu_peak_mib"]
        return ans["ips"]

    sizes, _ = run_child(["cache_size", "--root", str(root), "--size", str(size), *common], env)
    r["cache_disk_mib"], r["cache_raw_mib"] = mib(sizes["disk"]), mib(sizes["raw"])
    r["cache_disk_vs_raw"] = sizes["disk"] / sizes["raw"]
    measure("pipeline_ferbench")
    best = (0.0, 0)
    for w in workers:
        best = max(best, (measure(f"pipeline_plain_w{w}"), w))
    r["pipeline_plain_best"], r["plain_best_workers"] = best
    r["pipeline_ratio"] = r["pipeline_ferbench"] / best[0]
    # Shared cores drift by tens of percent over minutes: the training paths run in
    # interleaved rounds, each ratio is taken within a round, and the medians are reported.
    paths = [(f"train_plain_fp32_w{best[1]}", "train_plain_fp32"),
             ("model_alone_fp32", None),
             ("model_alone_engine", None),  # the engine's precision and memory format: the limit
             ("train_engine", None)]
    per_round = []
    for i in range(rounds):
        round_ = {}
        for name, key in paths:
            round_[key or name] = measure(name, key)
        round_["engine_vs_limit"] = round_["train_engine"] / round_["model_alone_engine"]
        round_["engine_vs_plain_fp32"] = round_["train_engine"] / round_["train_plain_fp32"]
        per_round.append(round_)
        print(f"  round {i + 1}/{rounds}: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                     round_.items()), flush=True)
    for k in per_round[0]:
        r[k] = float(np.median([x[k] for x in per_round]))
    r["rounds"] = per_round
    return r


def scale(ns: list[int], env: dict) -> dict:
    out = {}
    for n in ns:
        work = Path(tempfile.mkdtemp(prefix="ferbench-scale-"))
        try:
            sizes, _ = run_child(["synthfer_prepare", "--root", str(work), "--n", str(n)], env)
            ans, peak = run_child(["synthfer_epoch", "--root", str(work), "--n", str(n)], env)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out[n] = {"epoch_anon_mib": mib(peak), "epoch_seconds": ans["seconds"],
                  "cache_disk_mib": mib(sizes["train"]["disk"]),
                  "cache_disk_vs_raw": sizes["train"]["disk"] / sizes["train"]["raw"]}
        print(f"  synthfer n={n:>9,}: epoch peak anonymous RSS {mib(peak):8.1f} MiB, "
              f"{ans['seconds']:.1f} s; cache {mib(sizes['train']['disk']):.1f} MiB on disk",
              flush=True)
    first, last = out[ns[0]]["epoch_anon_mib"], out[ns[-1]]["epoch_anon_mib"]
    out["growth"] = last / first
    print(f"  anonymous RSS at n={ns[-1]:,} over n={ns[0]:,}: {last / first:.3f}x")
    return out


def main(argv=None):
    global BATCH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--fer2013", default=str(here.parent / "shared/data/fer2013.tar.gz"))
    ap.add_argument("--sizes", default="48,112")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds of the training paths (b); medians are reported")
    ap.add_argument("--scale", default="10000,100000,1000000",
                    help="synthfer training-set sizes for (d); empty to skip")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--workers", default=None,
                    help="DataLoader worker counts to try for the plain loader "
                         "(default 0,1,2 and one per core)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=48, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    BATCH = args.batch
    if args.child:
        print(json.dumps(child(args)))
        return
    archive = Path(args.fer2013)
    if not archive.exists():
        raise SystemExit(f"{archive}: FER2013 archive not found; pass --fer2013 PATH")
    env = dict(os.environ)
    env.setdefault("FERBENCH_CACHE", tempfile.mkdtemp(prefix="ferbench-cache-"))
    root = unpack(archive)
    from ferbench.device import describe, resolve_device, resolve_precision

    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else sorted({0, 1, 2, os.cpu_count() or 1}))
    common = ["--device", args.device, "--batch", str(BATCH)]
    out = {"cores": os.cpu_count(), "torch": torch.__version__, "batch": BATCH,
           "device": describe(device), "engine_precision": precision, "sizes": {}}
    for size in [int(s) for s in args.sizes.split(",") if s]:
        r = compare_size(root, size, args.steps, env, common, workers, args.rounds)
        out["sizes"][size] = r
        print(f"\n{size} px (batch {BATCH}, {out['cores']} cores, {out['device']['name']}, "
              f"engine precision {precision})", flush=True)
        for k, v in r.items():
            if k != "rounds":
                print(f"  {k:32s} {v:10.2f}" if isinstance(v, float) else f"  {k:32s} {v:>10}")
    if args.scale:
        print("\n(d) one epoch of ferbench run on cached synthfer, 48 px, one-layer model")
        out["scale"] = scale([int(n) for n in args.scale.split(",")], env)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
