"""`ferbench run`: methods × protocols × seeds on one dataset, each run stored as a result file."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None

from . import __version__
from .config import as_dict, compose_run, to_method_config
from .context import RunContext, SplitData
from .data.cache import load_cached
from .datasets.audit import audit, faces_shared, leaked_test_indices
from .datasets.base import open_dataset
from .device import describe, resolve_channels_last, resolve_device, resolve_precision
from .engine import Engine, trainable_state
from .errors import ConfigError, FerbenchError, unknown_name
from .plugins import registry
from .progress import console
from .protocols import ProtocolView, finish_view, parse_protocol
from .results import (SCHEMA_VERSION, RunKey, check_writable, config_hash, read_result,
                      write_bytes, write_json, write_npz)
from .scoring import score_run
from .weights import load_into, read_state_dict


@dataclass
class RunRequest:
    """Everything `ferbench run` was asked to do."""

    methods: list[str] = field(default_factory=list)   # empty: every installed method
    dataset: str = "synthfer"
    data_root: str | None = None
    layout: str | None = None
    data_options: dict = field(default_factory=dict)
    protocols: list[str] = field(default_factory=lambda: ["clean"])
    target: str | None = None
    target_root: str | None = None
    fer2013_root: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    noise_seed: int = 0
    preset: str | None = None        # None: quick on synthfer, paper elsewhere
    flags: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    out: str = "results"
    resume: bool = False
    force: bool = False
    leaderboard: bool = True
    show_progress: bool | None = None

    def __post_init__(self):
        # The dataset and the noisy labels are fixed before any method's config is composed,
        # so `data.*=` and `protocol.noise_seed=` overrides must land here, where they are
        # read, not only in the recorded config.
        kept = []
        for text in self.overrides:
            key, sep, value = text.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not (key.startswith("data.") or key == "protocol.noise_seed"):
                kept.append(text)
            elif key.startswith("data.options.") and len(key) > len("data.options."):
                self.data_options = {**self.data_options, key[len("data.options."):]: value}
            elif key in ("data.name", "data.root", "data.layout"):
                setattr(self, {"data.name": "dataset", "data.root": "data_root",
                               "data.layout": "layout"}[key], value or None)
            elif key == "protocol.noise_seed":
                try:
                    self.noise_seed = int(value)
                except ValueError:
                    raise ConfigError(f"override {text!r}: expected an integer") from None
            else:
                kept.append(text)  # left for the config to name as unknown
        self.overrides = kept
        # One folder, one run: `data` and `/abs/path/data` must not hash differently.
        for name in ("data_root", "target_root", "fer2013_root"):
            if getattr(self, name):
                setattr(self, name, str(Path(getattr(self, name)).expanduser().resolve()))


def _open(name, root, layout=None, options=None, root_flag="--data-root"):
    return open_dataset(registry().get("datasets", name), root, layout, options, root_flag)


def _open_target(name, root):
    return _open(name, root, root_flag="--target-root")


def plan_runs(req: RunRequest):
    """Check every name before any run starts: (dataset, parsed protocols, methods, preset)."""
    reg = registry()
    methods = req.methods or sorted(reg.methods)
    classes = {m: reg.get("methods", m) for m in methods}
    families = {name: p.obj for name, p in reg.protocols.items()}
    parsed = [parse_protocol(p, families) for p in req.protocols]
    preset = req.preset or ("quick" if req.dataset == "synthfer" else "paper")
    for m, cls in classes.items():
        if preset not in (getattr(cls, "presets", None) or {}):
            raise unknown_name(f"preset of method {m}", preset, cls.presets)
    read = {name for family, _ in parsed
            for name in getattr(reg.get("protocols", family), "reads", ())}
    for name in ("target", "target_root", "fer2013_root"):
        if getattr(req, name) and name not in read:
            readers = sorted(f for f, p in reg.protocols.items()
                             if name in getattr(p.obj, "reads", ()))
            raise ConfigError(f"--{name.replace('_', '-')} is read only by protocol "
                              f"{' or '.join(readers)}; add --protocol {readers[0]}")
    if req.flags.get("weights"):
        read_state_dict(req.flags["weights"])  # a missing or broken file fails before any run
    ds = _open(req.dataset, req.data_root, req.layout, req.data_options)
    # Every method's config is composed once now, so a bad override or setting fails before
    # the first run trains, not after it.
    sizes = []
    for name, cls in classes.items():
        try:
            cfg = compose_run(name, cls, preset, _flag_overrides(req, {}, ds), req.overrides)
        except ConfigError as e:
            if len(classes) == 1:
                raise
            hint = (" (a setting that only some methods have needs a run of its own)"
                    if str(e).startswith("unknown config key") else "")
            raise ConfigError(f"method {name}: {e}{hint}") from None
        mcfg = to_method_config(cls, cfg)
        _check_engine(cfg.engine)
        _check_backbone(mcfg.backbone)
        if int(mcfg.epochs) == 0 and not mcfg.weights:
            raise ConfigError(f"method {name}: epochs=0 trains nothing, so it evaluates the "
                              f"model it starts from; give that model with --weights FILE")
        sizes.append(int(mcfg.image_size))
    return ds, parsed, classes, preset, min(sizes)


def run(req: RunRequest) -> list[Path]:
    """Run every (protocol, method, seed) not yet stored; return the result files."""
    out = check_writable(req.out)
    ds, parsed, classes, preset, smallest = plan_runs(req)
    adapter = registry().get("datasets", req.dataset)
    mode = "L" if getattr(adapter, "grey", False) else "RGB"
    views = []
    for family, params in parsed:
        params = {**params, "noise_seed": req.noise_seed}
        fam = registry().get("protocols", family)
        for name in getattr(fam, "reads", ()):
            params.setdefault(name, getattr(req, name, None))
        view = fam.apply(ds, params, open_target=_open_target)
        if view.train.fingerprint == view.test.fingerprint:
            # Legitimate (a one-split set used as a cross target is tested elsewhere), but a
            # test accuracy on the training images is not a benchmark figure: say so loudly.
            console.print(f"warning: {ds.name} under {view.id} trains and tests on the same "
                          f"images (one split); its test accuracy measures fitting, not "
                          f"recognition: use it as a cross target", highlight=False)
        if "cross" in view.record:
            _check_cross(ds, view, smallest, mode, req.show_progress)
        views.append((params, view))
    total = len(views) * len(classes) * len(req.seeds)
    written, i = [], 0
    for params, view in views:
        for name, cls in classes.items():
            for seed in req.seeds:
                i += 1
                path = run_one(req, out, ds, mode, params, view, name, cls, preset,
                               seed, f"[{i}/{total}]")
                if path is not None:  # None: another process is running it
                    written.append(path)
    if req.leaderboard:
        from .leaderboard import build_leaderboard

        board = build_leaderboard(out)
        console.print(f"leaderboard: {board['markdown']}"
                      + (f" ({len(board['skipped'])} result files skipped, listed at its end)"
                         if board["skipped"] else ""), highlight=False)
    return written


# Above this share of shared faces the target is the source, or a copy of it, by content.
SAME_DATA_SHARE = 0.5


def _check_cross(ds, view, size, mode, show) -> None:
    """Refuse a cross target that holds the source's faces; count and say any it shares."""
    target = view.record["cross"]["target"]
    found = faces_shared(view.test, ds, size, mode, show)
    view.record["cross"]["faces_shared"] = found
    n, shared = found["test_faces"], found["shared"]
    if not shared:
        return
    where = ", ".join(f"{c:,} {s}" for s, c in found["per_source_split"].items() if c)
    if shared >= SAME_DATA_SHARE * n:
        raise ConfigError(f"protocol cross: {shared:,} of {n:,} {target} test faces are also "
                          f"{ds.name} faces ({where}): the same faces, so a cross-dataset "
                          f"score would be a within-dataset one")
    console.print(f"warning: {shared:,} of {n:,} {target} test faces are also {ds.name} faces "
                  f"({where}); they stay in the test set and the result records the count",
                  highlight=False)


def _flag_overrides(req: RunRequest, params: dict, ds) -> dict:
    f = {f"method.{k}": v for k, v in req.flags.items()
         if k in ("epochs", "batch_size", "image_size", "backbone", "weights", "lr")}
    f.update({f"engine.{k}": v for k, v in req.flags.items()
              if k in ("device", "precision", "threads")})
    f.update({"data.name": req.dataset, "data.root": req.data_root, "data.layout": req.layout,
              "protocol.noise_seed": params.get("noise_seed", 0)})
    # The dataset's converted values, so that n_train=064 and n_train=64 are one run.
    for k in req.data_options:
        k = k.replace("-", "_")
        f[f"data.options.{k}"] = ds.options[k]
    return f


def _check_backbone(name: str) -> None:
    import difflib

    import timm

    from . import models  # noqa: F401  (registers ferbench's backbones with timm)

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.6)
        raise ConfigError(f"unknown backbone {name!r}"
                          + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (any timm model name; ferbench's own: "
                          f"{', '.join(timm.list_models('ferbench_*'))})")


def _check_engine(engine) -> None:
    for key in ("threads", "eval_every"):
        if int(engine[key]) < 0:
            raise ConfigError(f"engine.{key}={engine[key]}: must be >= 0")
    if engine.select not in ("final", "val"):
        raise ConfigError(f"engine.select={engine.select!r}: must be final or val")


def run_one(req, out, ds, mode, params, view, name, cls, preset, seed, tag) -> Path | None:
    cfg = compose_run(name, cls, preset, _flag_overrides(req, params, ds), req.overrides)
    mcfg = to_method_config(cls, cfg)
    _check_engine(cfg.engine)
    device = resolve_device(cfg.engine.device)
    precision = resolve_precision(cfg.engine.precision, device)
    if cfg.engine.threads:
        torch.set_num_threads(int(cfg.engine.threads))
    pv = finish_view(view, {**params, **as_dict(cfg.protocol)},
                     _leaks(ds, cfg, mode) if cfg.protocol.dedup_test else None)
    if cfg.engine.select == "val" and pv.val is None:
        raise ConfigError(f"engine.select=val picks the epoch by validation accuracy, but "
                          f"{ds.name} under {pv.id} has no validation split: add "
                          f"protocol.val_fraction=0.1")
    resolved = as_dict(cfg)
    resolved["engine"]["precision"] = precision
    channels_last = resolve_channels_last(cfg.engine.channels_last, device, precision)
    resolved["engine"]["channels_last"] = "on" if channels_last else "off"
    method = cls(mcfg)
    from .data.augment import resolve_view

    resolved["method"]["views"] = [list(resolve_view(v)) for v in method.views]
    hashed = {k: resolved[k] for k in ("method", "data")}
    hashed["engine"] = {k: v for k, v in resolved["engine"].items() if k not in ("device",
                                                                                   "threads")}
    hashed["protocol"] = {k: v for k, v in resolved["protocol"].items()
                          if k in ("val_fraction", "dedup_test", "allow_label_extras")}
    # Labels that do not follow from the protocol's name (a noise file, FER2013's labels) and
    # a cross target's folder are part of what a run is: a new file or folder is a new run.
    if pv.noise is not None and pv.noise.source != "generated":
        hashed["protocol"]["labels"] = pv.noise.hash
    if pv.params.get("target_root"):
        hashed["protocol"]["target_root"] = str(pv.params["target_root"])
    key = RunKey(ds.name, pv.id + _suffix(pv), name, seed, config_hash(hashed))
    result_path = key.result_path(out)
    label = f"{tag} {name} · {key.protocol} · seed {seed} · {ds.name}"
    if result_path.exists() and not req.force:
        if _readable(result_path):
            console.print(f"{label}: stored result, skipped (--force reruns)", highlight=False)
            return result_path
        console.print(f"{label}: the stored result is unreadable, running it again",
                      highlight=False)
    check_writable(key.folder(out))  # a file in the way fails now, not after training
    with _removed_if_left_empty(key.folder(out), out), \
            _claimed(key.stem(out).with_suffix(".lock")) as mine:
        if not mine:
            console.print(f"{label}: another ferbench process is running it, skipped",
                          highlight=False)
            return None
        if result_path.exists() and not req.force and _readable(result_path):
            console.print(f"{label}: stored by another ferbench process meanwhile, skipped",
                          highlight=False)
            return result_path
        console.print(f"{label} · {precision} on {device.type}", highlight=False)
        t0 = time.time()
        # A weights.pt that ferbench wrote (it carries its run key) restores the whole model;
        # any other checkpoint goes into each backbone the method builds.
        state, source_run = read_state_dict(mcfg.weights) if mcfg.weights else (None, None)
        whole_model = source_run is not None
        ctx, weights_info = _context(pv, mcfg, mode, device, precision, req.show_progress,
                                     whole_model)
        # after the images decoded: nothing half-written
        noise_file = _write_noise(out, ds.name, pv)
        stem = key.stem(out)
        run_dir = stem.parent / f"{stem.name}.run"
        if (run_dir / "checkpoint.pt").exists():
            console.print("  an interrupted run of this key has a checkpoint: "
                          + ("continuing it" if req.resume
                             else "starting over (--resume continues it)"), highlight=False)
        engine = Engine(method, ctx, seed=seed, test_labels=pv.test_labels,
                        val_labels=pv.val_labels, checkpoint_dir=run_dir, resume=req.resume,
                        eval_every=int(cfg.engine.eval_every), select=cfg.engine.select,
                        channels_last=channels_last, show_progress=req.show_progress,
                        compile=bool(cfg.engine.compile))
        if whole_model:
            engine.initial_state = (mcfg.weights, state)
            weights_info.append({"file": str(mcfg.weights), "whole_model": True,
                                 "source_run": source_run})
        res = engine.fit()
        scores = score_run(pv, res)
        record = _record(key, pv, name, cls, preset, resolved, ds, res, scores, noise_file,
                         device, precision, weights_info, time.time() - t0)
        arrays = {"test_ids": pv.test.ids, "test_probs": res.test_probs,
                  "test_uncertainty": res.test_uncertainty, "test_labels": pv.test_labels,
                  "train_ids": pv.train.ids}
        for k, v in res.noise_scores.items():
            arrays[f"train_noise_scores_{k}"] = v
        if res.noise_decisions is not None:
            arrays["train_noise_decisions"] = res.noise_decisions
        if res.test_members is not None:
            arrays["test_members"] = res.test_members
        for k, stack in res.per_sample.items():
            arrays[f"method_{k}"] = np.stack(stack)
        write_npz(stem.with_suffix(".npz"), arrays)
        _save_weights(stem.parent / f"{stem.name}.weights.pt",
                      trainable_state(res.model, ctx.frozen_modules), key)
        write_json(result_path, record)  # last: the run is complete when this exists
        shutil.rmtree(run_dir, ignore_errors=True)
        m = record["metrics"]
        console.print(f"  test acc {100 * m['test_acc']:.2f}"
                      + (f" · noise AUROC {m['train_noise_auroc']:.3f}"
                         if m.get("train_noise_auroc") is not None else "")
                      + f" · {record['wall_time_s']:.0f} s → {result_path}", highlight=False)
    return result_path


@contextmanager
def _claimed(lock: Path):
    """True while this process alone runs the key (an advisory lock the kernel releases when
    the process dies, however it dies); False when another process holds it."""
    if fcntl is None:  # no flock (Windows): runs are not coordinated
        yield True
        return
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:  # the file locked must still be the one at `lock`, not one its holder removed
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def _removed_if_left_empty(folder: Path, out: Path):
    """A run that fails before writing anything leaves no empty folders behind."""
    try:
        yield
    except BaseException:
        for d in (folder, *folder.parents):
            if d == out or out not in d.parents:
                break
            try:
                d.rmdir()  # only an empty folder; an interrupted run's checkpoint stays
            except OSError:
                break
        raise


def _readable(path: Path) -> bool:
    try:
        read_result(path)
    except FerbenchError:
        return False
    return True


def _suffix(pv: ProtocolView) -> str:
    parts = []
    if pv.params.get("noise_seed") and pv.noise is not None and pv.noise.source == "generated":
        parts.append(f"ns{pv.params['noise_seed']}")
    if pv.record.get("val_fraction"):
        parts.append(f"val{pv.record['val_fraction']:g}")
    if pv.record.get("dedup_test_removed") is not None:
        parts.append("dedup")
    return ("+" + "+".join(parts)) if parts else ""


def _leaks(ds, cfg, mode):
    report = audit(ds, int(cfg.method.image_size), mode)
    return leaked_test_indices(report, ds)


def _write_noise(out: Path, dataset: str, pv: ProtocolView) -> dict | None:
    if pv.noise is None:
        return None
    path = out / dataset / "noise" / f"{pv.id.replace(':', '_')}-{pv.noise.hash}.json"
    if not path.exists():
        write_json(path, pv.noise.document)
    return {"hash": pv.noise.hash, "file": str(path.relative_to(out)),
            "rate": pv.noise.rate, "n_flipped": int(pv.noise.flipped.sum()),
            "n_train": int(len(pv.noise.flipped)), "source": pv.noise.source}


def _split_data(name, samples, labels, mode, size, withhold, show):
    cache = load_cached(samples, size, mode, show_progress=show).images
    extras = {}
    for k, v in samples.extras.items():
        if withhold and k in samples.label_extras:
            continue
        arr = np.asarray(v)
        if arr.dtype.kind in "fiub":
            extras[k] = torch.from_numpy(np.ascontiguousarray(arr))
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64)) if labels is not None else None
    return SplitData(name, samples.ids, lab, extras, cache)


def _context(pv: ProtocolView, mcfg, mode, device, precision, show=None, whole_model=False):
    import timm

    from . import models  # noqa: F401  (registers ferbench's backbones with timm)

    size = int(mcfg.image_size)
    train = _split_data("train", pv.train, pv.train_labels, mode, size,
                        pv.withhold_label_extras, show)
    val = (_split_data("val", pv.val, pv.val_labels, mode, size,
                       pv.withhold_label_extras, show) if pv.val is not None else None)
    test = _split_data("test", pv.test, None, mode, size, False, show)
    test.extras = {}  # the method never sees test labels or label-carrying test extras
    weights_info: list = []

    def create_backbone(name=None, num_classes=None, weights="config", ignore_keys=(), **kw):
        name = name or mcfg.backbone
        try:
            model = timm.create_model(name, pretrained=False,
                                      num_classes=num_classes or len(pv.classes), **kw)
        except RuntimeError as e:
            raise ConfigError(f"backbone {name!r}: {e}") from None
        path = mcfg.weights if weights == "config" else weights
        if path and not (whole_model and weights == "config"):
            weights_info.append({"backbone": name, "file": str(path),
                                 **load_into(model, path, ignore_keys)})
        elif not path:
            weights_info.append({"backbone": name, "file": None, "init": "random"})
        return model

    ctx = RunContext(classes=pv.classes, image_size=size, device=device, precision=precision,
                     train=train, val=val, test=test, epochs=int(mcfg.epochs),
                     batch_size=int(mcfg.batch_size),
                     generator=torch.Generator(device=device),
                     create_backbone=create_backbone, predict_fn=None)
    return ctx, weights_info


def _save_weights(path: Path, state: dict, key: RunKey) -> None:
    import io

    buf = io.BytesIO()
    torch.save({"ferbench": {**key.as_dict(), "version": __version__}, "state_dict": state}, buf)
    write_bytes(path, buf.getvalue())


def _record(key, pv, name, cls, preset, resolved, ds, res, scores, noise_file, device,
            precision, weights_info, wall) -> dict:
    import timm

    provided = registry().methods[name]
    record = {
        "schema": SCHEMA_VERSION,
        "key": key.as_dict(),
        "protocol": {"id": key.protocol, "family": pv.family,
                     "params": {k: v for k, v in pv.params.items()},
                     "label": key.protocol, "noise": noise_file, "record": pv.record},
        "method": {"name": name, "plugin": provided.plugin, "version": provided.version,
                   "preset": preset,
                   "preset_source": (getattr(cls, "preset_sources", {}) or {}).get(preset,
                                                                                   "ferbench")},
        "config": resolved,
        "dataset": {"name": ds.name, "layout": ds.layout, "classes": list(pv.classes),
                    "fingerprints": {"train": pv.train.fingerprint, "test": pv.test.fingerprint,
                                     **({"val": pv.val.fingerprint} if pv.val is not None
                                        else {})},
                    "n_train": len(pv.train), "n_test": len(pv.test), "notes": ds.notes},
        "versions": {"ferbench": __version__, "torch": torch.__version__,
                     "timm": timm.__version__, "python": platform.python_version(),
                     "plugin": provided.version, "numpy": np.__version__},
        "device": describe(device), "precision": precision,
        "weights": weights_info,
        "resumed_from_epoch": res.resumed_from,
        "wall_time_s": wall,
        "history": res.history,
        "metrics": scores["metrics"],
        "oracle": res.oracle,
        "selected": ({k: v for k, v in res.selected.items() if k != "test_probs"}
                     if res.selected else None),
        "per_class": scores["per_class"],
        "confusion": scores["confusion"],
        "classes_scored": scores["classes_scored"],
        "reliability": scores["reliability"],
        "rejection_curve": scores["rejection_curve"],
        "ambiguity": scores["curves"].get("ambiguity"),
        "noise_detection": scores.get("noise_detection"),
        "noise_summary": scores.get("noise_summary"),
        "method_results": res.method_results,
        "command": " ".join(sys.argv),
    }
    return record
