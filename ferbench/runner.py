"""`ferbench run`: methods × protocols × seeds on one dataset, each run stored as a result file."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .claims import claimed, removed_if_left_empty
from .checkpoint import trainable_state
from .config import as_dict, compose_run, to_method_config
from .config.settings import added_at_default
from .context import build_context, check_extra_readable
from .data.augment import resolve_view
from .device import (describe, resolve_channels_last, resolve_device, resolve_precision,
                     shared_cpu_threads)
from .engine import Engine
from .errors import ConfigError, PluginError
from .extras import attach_extras
from .planning import (RunRequest, check_cross, flag_overrides, leaked_test, open_target,
                       plan_runs)
from .plugins import registry
from .progress import console
from .protocols import finish_view
from .provenance import code_state, cuda_versions, plugin_versions, utc_now
from .results import check_writable, is_readable_result
from .runkey import run_key
from .scoring import score_run
from .store import make_record, write_arrays, write_noise, write_record, write_weights
from .tracking import JsonLinesHistory, check_loggers, history_path, open_loggers
from .weights import read_state_dict

__all__ = ["Prepared", "RunRequest", "prepare", "resolve_cell", "run", "run_one"]


def run(req: RunRequest) -> list[Path]:
    """Run every (protocol, method, seed) not yet stored; return the result files."""
    out = check_writable(req.out, create=False)  # created when a run starts, not before
    created = not out.exists()
    try:
        return _run(req, out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused or failed request leaves no empty results folder
        raise


@dataclass
class Prepared:
    """A request checked and its protocol views built: what every one of its runs shares."""

    req: RunRequest
    ds: object
    mode: str
    views: list          # (protocol params, view) per --protocol
    classes: dict        # method name -> class
    preset: str

    def cells(self):
        """(protocol as given, params, view, method name, class, seed) of every run, in the
        order they run."""
        for protocol, (params, view) in zip(self.req.protocols, self.views):
            for name, cls in self.classes.items():
                for seed in self.req.seeds:
                    yield protocol, params, view, name, cls, seed


@dataclass
class Resolved:
    """One run's composed config, finished view and key: all that is known before training."""

    cfg: object
    mcfg: object
    device: torch.device
    precision: str
    channels_last: bool
    view: object
    method: object
    resolved: dict
    key: object


def prepare(req: RunRequest) -> Prepared:
    """Check every name and file of `req` and build its protocol views (no training)."""
    ds, parsed, classes, preset, smallest, extras = plan_runs(req)
    extras_record = attach_extras(ds, extras)  # before any protocol, so every view carries them
    adapter = registry().get("datasets", req.dataset)
    mode = "L" if getattr(adapter, "grey", False) else "RGB"
    views = []
    for family, params in parsed:
        params = {**params, "noise_seed": req.noise_seed}
        fam = registry().get("protocols", family)
        for name in getattr(fam, "reads", ()):
            params.setdefault(name, getattr(req, name, None))
        view = fam.apply(ds, params, open_target=open_target)
        if extras_record:
            view.record["extras"] = extras_record
        if view.train.fingerprint == view.test.fingerprint:
            # Legitimate (a one-split set used as a cross target is tested elsewhere), but a
            # test accuracy on the training images is not a benchmark figure: say so loudly.
            console.print(f"warning: {ds.name} under {view.id} trains and tests on the same "
                          f"images (one split); its test accuracy measures fitting, not "
                          f"recognition: use it as a cross target", highlight=False)
        if "cross" in view.record:
            check_cross(ds, view, smallest, mode, req.show_progress)
        views.append((params, view))
    return Prepared(req, ds, mode, views, classes, preset)


def _run(req: RunRequest, out: Path) -> list[Path]:
    plan = prepare(req)
    cells = list(plan.cells())
    # Every cell's config is resolved before the first trains: a setting one protocol
    # cannot run (soft targets a noise protocol withholds) stops the whole command.
    resolved = [resolve_cell(req, plan.ds, plan.mode, params, view, name, cls, plan.preset,
                             seed) for _, params, view, name, cls, seed in cells]
    written = []
    for i, ((_, _, _, name, cls, seed), r) in enumerate(zip(cells, resolved), 1):
        path = run_one(req, out, plan.ds, plan.mode, r, name, cls, plan.preset, seed,
                       f"[{i}/{len(cells)}]")
        if path is not None:  # None: another process is running it
            written.append(path)
    if req.leaderboard:
        from .leaderboard import build_leaderboard

        board = build_leaderboard(out)
        console.print(f"leaderboard: {board['markdown']}"
                      + (f" ({len(board['skipped'])} result files skipped, listed at its end)"
                         if board["skipped"] else ""), highlight=False)
    return written


def resolve_cell(req, ds, mode, params, view, name, cls, preset, seed) -> Resolved:
    """Compose one run's config, finish its view and compute its key."""
    cfg = compose_run(name, cls, preset, flag_overrides(req, params, ds), req.overrides)
    mcfg = to_method_config(cls, cfg)
    device = resolve_device(cfg.engine.device)
    precision = resolve_precision(cfg.engine.precision, device)
    pv = finish_view(view, as_dict(cfg.protocol),
                     leaked_test(ds, cfg, mode) if cfg.protocol.dedup_test else None)
    if cfg.engine.select == "val" and pv.val is None:
        raise ConfigError(f"engine.select=val picks the epoch by validation accuracy, but "
                          f"{ds.name} under {pv.id} has no validation split: add "
                          f"protocol.val_fraction=0.1")
    resolved = as_dict(cfg)
    # How a run is watched is not what it computes: kept out of the recorded config, so out
    # of its hash and the leaderboard's variants (the record's `loggers` says where it went).
    check_loggers(resolved["engine"].pop("loggers"))
    resolved["engine"]["precision"] = precision
    channels_last = resolve_channels_last(cfg.engine.channels_last, device, precision)
    resolved["engine"]["channels_last"] = "on" if channels_last else "off"
    method = cls(mcfg)
    for extra, setting_text in method.extras_read().items():
        # What `ctx.train_extra` would refuse once the method builds, found now.
        check_extra_readable(extra, setting_text, pv.id, pv.train.extras,
                             pv.train.label_extras if pv.withhold_label_extras else ())
    resolved["method"]["views"] = [list(resolve_view(v)) for v in method.views]
    if pv.record.get("extras"):
        # A user's extra files by content and kind, not by where they lie: part of the data
        # (hashed, and naming a variant in the leaderboard); absent without any, so such a
        # run keeps the hash it always had.
        resolved["data"]["extras"] = {name: {"hash": e["hash"], "kind": e["kind"]}
                                      for name, e in pv.record["extras"].items()}
    key = run_key(ds.name, pv, name, seed, resolved, added_at_default(cls.Config))
    return Resolved(cfg, mcfg, device, precision, channels_last, pv, method, resolved, key)


def run_one(req, out, ds, mode, r: Resolved, name, cls, preset, seed, tag) -> Path | None:
    """One run of a resolved cell: skip it if stored, else train, score and store it."""
    if r.cfg.engine.threads:
        torch.set_num_threads(int(r.cfg.engine.threads))
        return _run_one(req, out, ds, mode, r, name, cls, seed, preset, tag)
    before = torch.get_num_threads()
    try:
        return _run_one(req, out, ds, mode, r, name, cls, seed, preset, tag)
    finally:
        torch.set_num_threads(before)  # a shared machine's choice ends with its run


def _run_one(req, out, ds, mode, r, name, cls, seed, preset, tag) -> Path | None:
    cfg, mcfg, device, precision, pv, method, resolved, key = (
        r.cfg, r.mcfg, r.device, r.precision, r.view, r.method, r.resolved, r.key)
    channels_last = r.channels_last
    result_path = key.result_path(out)
    title = f"{name} · {key.protocol} · seed {seed} · {ds.name}"
    label = f"{tag} {title}"
    if result_path.exists() and not req.force:
        if is_readable_result(result_path):
            console.print(f"{label}: stored result, skipped (--force reruns)", highlight=False)
            return result_path
        console.print(f"{label}: the stored result is unreadable, running it again",
                      highlight=False)
    check_writable(key.folder(out))  # a file in the way fails now, not after training
    with removed_if_left_empty(key.folder(out), out), \
            claimed(key.stem(out).with_suffix(".lock")) as mine:
        if not mine:
            console.print(f"{label}: another ferbench process is running it, skipped",
                          highlight=False)
            return None
        if result_path.exists() and not req.force and is_readable_result(result_path):
            console.print(f"{label}: stored by another ferbench process meanwhile, skipped",
                          highlight=False)
            return result_path
        console.print(f"{label} · {precision} on {device.type}", highlight=False)
        shared = None if cfg.engine.threads else shared_cpu_threads(device)
        if shared:
            # Torch's threads on cores other processes keep busy wait on each other at
            # every parallel region; the free cores train several times faster.
            torch.set_num_threads(shared[0])
            console.print(f"  the CPU is shared ({shared[1]:.1f} of {os.cpu_count()} cores "
                          f"busy): training with {shared[0]} thread"
                          f"{'s' if shared[0] > 1 else ''} (engine.threads=N pins it)",
                          highlight=False)
        t0, started_at = time.time(), utc_now()
        # A weights.pt that ferbench wrote (it carries its run key) restores the whole model;
        # any other checkpoint goes into each backbone the method builds.
        state, source_run = read_state_dict(mcfg.weights) if mcfg.weights else (None, None)
        whole_model = source_run is not None
        ctx, test, weights_info = build_context(pv, mcfg, mode=mode, device=device,
                                                precision=precision,
                                                show_progress=req.show_progress,
                                                whole_model=whole_model, run_key=key)
        stem = key.stem(out)
        run_dir = stem.parent / f"{stem.name}.run"
        if (run_dir / "checkpoint.pt").exists():
            console.print("  an interrupted run of this key has a checkpoint: "
                          + ("continuing it" if req.resume
                             else "starting over (--resume continues it)"), highlight=False)
        if whole_model:
            weights_info.append({"file": str(mcfg.weights), "whole_model": True,
                                 "source_run": source_run})
        history = history_path(stem)  # beside the result: run_dir goes when the run ends
        optional = open_loggers(cfg.engine.loggers, out=out,
                                run_path=stem.relative_to(out).as_posix())
        engine = Engine(method, ctx, test=test, seed=seed, checkpoint_dir=run_dir,
                        resume=req.resume, eval_every=int(cfg.engine.eval_every),
                        select=cfg.engine.select, channels_last=channels_last,
                        show_progress=req.show_progress, compile=bool(cfg.engine.compile),
                        initial_state=(mcfg.weights, state) if whole_model else None,
                        loggers=[JsonLinesHistory(history), *optional.values()],
                        run={"name": title, "key": key.as_dict(), "config": resolved})
        try:
            res = engine.fit()
        except PluginError:
            shutil.rmtree(run_dir, ignore_errors=True)  # a broken method: nothing to resume
            raise
        scores = score_run(pv, res)
        # Once the run trained: a run refused while its method builds leaves nothing behind.
        noise_file = write_noise(out, ds.name, pv)
        provided = registry().methods[name]
        record = make_record(
            key=key, view=pv, provided=provided, preset=preset,
            preset_source=(getattr(cls, "preset_sources", {}) or {}).get(preset, "ferbench"),
            resolved=resolved, ds=ds, res=res, scores=scores, noise_file=noise_file,
            device=describe(device), precision=precision, weights_info=weights_info,
            wall=time.time() - t0, command=req.command or shlex.join(sys.argv))
        record = dataclasses.replace(
            record, versions={**record.versions, **cuda_versions(device),
                              "plugins": plugin_versions(registry().plugins)},
            history_file=history.name if history.exists() else None,
            loggers={n: lg.where for n, lg in optional.items()},
            code=code_state(registry().plugins), started_at=started_at, finished_at=utc_now())
        write_arrays(stem.with_suffix(".npz"), pv, res)
        write_weights(stem.parent / f"{stem.name}.weights.pt",
                      trainable_state(res.model, ctx.frozen_modules), key)
        write_record(result_path, record)  # last: the run is complete when this exists
        shutil.rmtree(run_dir, ignore_errors=True)
        m = record.metrics
        console.print(f"  test acc {100 * m['test_acc']:.2f}"
                      + (f" · noise AUROC {m['train_noise_auroc']:.3f}"
                         if m.get("train_noise_auroc") is not None else "")
                      + f" · {record.wall_time_s:.0f} s → {result_path}", highlight=False)
    return result_path

