"""The one training loop of every method: seeding, phases, optimisers, steps, evaluation rounds."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, load_trainable_state, restore, save_checkpoint
from .context import Prefetcher, RunContext, SplitData, make_batch
from .data.augment import apply_view
from .errors import DataError, PluginError
from .evaluation import Evaluator
from .method import (Method, OptimizerSpec, PerSample, Phase, check_training_indices,
                     distribution_problem, member_name)
from .optim import default_optimizer
from .progress import console, progress_bar
from .tracking import Loggers


def loss_read_interval(device: torch.device) -> int:
    """Training steps between reads of the loss on the host. A read waits for the device to
    finish, so on a GPU the losses are read (and checked for NaN) in groups."""
    return 1 if device.type == "cpu" else 20


def seed_everything(*parts) -> int:
    seed = int(np.random.SeedSequence([abs(hash_int(p)) for p in parts]).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return seed


def hash_int(x) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(str(x).encode()).digest()[:4], "little")


@dataclass
class EngineResult:
    model: torch.nn.Module
    history: list[dict]
    test_probs: np.ndarray
    test_uncertainty: np.ndarray
    test_members: np.ndarray | None
    test_extras: dict[str, float]
    oracle: dict | None
    selected: dict | None
    per_sample: dict[str, list]                # name → one array per epoch
    train_probs: np.ndarray | None
    noise_scores: dict[str, np.ndarray]
    noise_decisions: np.ndarray | None
    method_results: dict
    flops_per_image: float | None
    params: int
    wall_time_s: float
    images_per_s: float
    resumed_from: int | None = None
    weights_info: list = field(default_factory=list)
    distributions: set = field(default_factory=set)  # per_sample names that are [N, K] distributions
    training_subset: dict | None = None              # {n, of}: a method's fixed training subset


@dataclass
class _Progress:
    """What the loop has gathered so far; a checkpoint holds it, so a resumed run goes on."""

    history: list = field(default_factory=list)
    per_sample: dict = field(default_factory=dict)
    distributions: set = field(default_factory=set)
    oracle: dict | None = None
    selected: dict | None = None
    best_val: float = -1.0
    img_count: int = 0
    train_time: float = 0.0

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "_Progress":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in ckpt.items() if k in names})


class Engine:
    """Trains `method` on a run's context and tests it on `test` every `eval_every` epochs.

    `test` is the test split with its labels, which the engine scores and the method never
    sees; `initial_state` is (file, state dict) of a ferbench weights.pt to start from;
    `loggers` (ferbench.tracking) get each epoch's history row, `run` what they are told of
    the run at its start.
    """

    def __init__(self, method: Method, ctx: RunContext, *, test: SplitData, seed: int,
                 checkpoint_dir: Path | None = None, resume: bool = False, eval_every: int = 1,
                 select: str = "final", channels_last: bool = False,
                 show_progress: bool | None = None, compile: bool = False,
                 initial_state: tuple | None = None, loggers=(), run: dict | None = None):
        self.method, self.ctx, self.test, self.seed = method, ctx, test, seed
        self.compile = compile
        self._compiled: dict[int, torch.nn.Module] = {}
        self.checkpoint_dir, self.resume = checkpoint_dir, resume
        self.eval_every, self.select = eval_every, select
        self.channels_last = channels_last
        self.show_progress = show_progress
        self.initial_state = initial_state
        self.evaluator = Evaluator(method, ctx, channels_last)
        self.loggers = Loggers(loggers, run)

    # ---- optimisers ------------------------------------------------------
    def _optimizers(self, model, phase: Phase) -> list[OptimizerSpec]:
        specs = self.method.configure_optimizers(model, self.ctx)
        if specs is None:
            specs = default_optimizer(model, self.method.config,
                                      phase.epochs * self.ctx.steps_per_epoch)
        if isinstance(specs, OptimizerSpec):
            specs = [specs]
        return list(specs)

    # ---- the loop --------------------------------------------------------
    def fit(self) -> EngineResult:
        """Train and test; the loggers hear how the run ended, however it ends."""
        try:
            res = self._fit()
        except BaseException as e:
            status = "killed" if isinstance(e, KeyboardInterrupt) else "failed"
            self.loggers.finish({"status": status, "error": str(e).split("\n")[0]})
            raise
        last = res.history[-1] if res.history else {}
        self.loggers.finish({"status": "finished", "wall_time_s": res.wall_time_s,
                             "images_per_s": res.images_per_s,
                             **{k: last[k] for k in ("test_acc", "val_acc") if k in last}})
        return res

    def _fit(self) -> EngineResult:
        ctx, method = self.ctx, self.method
        t_start = time.time()
        if ctx.device.type == "cuda":
            # cuDNN picks the fastest convolution for each shape once; the choice may vary
            # between runs, a rounding-level difference every GPU trainer accepts.
            torch.backends.cudnn.benchmark = True
        seed_everything("init", self.seed)
        ctx.generator.manual_seed(hash_int(("ctx", self.seed)))
        model = method.build(ctx).to(ctx.device)
        if self.initial_state is not None:  # a weights.pt that ferbench wrote for this method
            path, state = self.initial_state
            try:
                load_trainable_state(model, state, ctx.frozen_modules)
            except RuntimeError as e:
                # torch's first line only names the class ("Error(s) in loading ..."):
                # the next line names the first mismatching key.
                why = " ".join(line.strip() for line in str(e).splitlines()[:2])
                raise DataError(path, f"does not fit method {type(method).__name__}: "
                                      f"{why[:240]}") from None
        self.evaluator.bind(model)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        subset = method.training_indices(ctx)
        if subset is not None:
            ctx.restrict_training(check_training_indices(subset, len(ctx.train), method))
        phases = method.phases(ctx) or [Phase("train", ctx.epochs)]
        total = sum(p.epochs for p in phases)
        progress = _Progress()
        self.resumed_from = None
        ckpt = load_checkpoint(self.checkpoint_dir) if self.resume else None
        epoch = 0
        for pi, phase in enumerate(phases):
            phase_end = epoch + phase.epochs
            ctx.phase = phase
            method.on_phase_start(model, ctx, phase)
            if ckpt is not None and (ckpt["phase_index"] > pi or (
                    ckpt["phase_index"] == pi and ckpt.get("phase_done"))):
                # A phase the interrupted run finished: its hooks run again (a method may
                # build structure in them), then, where the checkpoint was written at this
                # phase's end, the state is restored as it was there.
                method.on_phase_end(model, ctx, phase)
                epoch = phase_end
                if ckpt["phase_index"] == pi:
                    progress = self._restore(model, [], ckpt)
                    self.resumed_from = ckpt["epoch"] + 1
                    ckpt = None
                continue
            specs = self._optimizers(model, phase)
            if ckpt is not None:  # written inside this phase, after one of its epochs
                progress = self._restore(model, specs, ckpt)
                self.resumed_from = epoch = ckpt["epoch"] + 1
                ckpt = None
            while epoch < phase_end:
                self._epoch(model, specs, epoch, phase, progress, total)
                self._save(model, specs, progress, epoch, pi, phase_done=False)
                epoch += 1
            method.on_phase_end(model, ctx, phase)
            if phase.epochs:  # the state after on_phase_end is what a resumed run continues from
                self._save(model, [], progress, epoch - 1, pi, phase_done=True)
        self._start_logging(progress, total)  # a resumed run whose epochs were all done
        if self.eval_every != 1:
            progress.oracle = None  # the best test epoch is unknown unless every epoch was tested
        return self._finish(model, progress, t_start)

    def _start_logging(self, progress: _Progress, total: int) -> None:
        """The loggers' start, once, when the history a resumed run continues is known."""
        self.loggers.start(epochs=total, resumed_from=self.resumed_from,
                           history=list(progress.history))

    def _epoch(self, model, specs, epoch, phase, progress: _Progress, total: int) -> None:
        """One epoch: train, the method's end-of-epoch figures, evaluation, the history row."""
        ctx, method = self.ctx, self.method
        self._start_logging(progress, total)
        row, n_img, secs = self._train_epoch(model, specs, epoch, phase)
        progress.img_count += n_img
        progress.train_time += secs
        end = method.on_epoch_end(model, ctx, epoch) or {}
        for k, v in end.items():
            if isinstance(v, PerSample):
                # A copy: on the CPU `.numpy()` shares the method's own buffer, which its
                # next steps overwrite, and every epoch's row would end up the last one.
                arr = np.array(v.values.detach().cpu() if torch.is_tensor(v.values)
                               else v.values, copy=True)
                if v.distribution:
                    _check_distribution(arr, len(ctx.train), ctx.num_classes,
                                        f"{member_name(method, 'on_epoch_end')}[{k!r}]")
                    progress.distributions.add(k)
                progress.per_sample.setdefault(k, []).append(arr)
            else:
                row[k] = float(v.detach().float().mean()) if torch.is_tensor(v) else v
        for s in specs:
            if s.scheduler is not None and s.interval == "epoch":
                s.scheduler.step()
        last = epoch == total - 1
        tested = bool(self.eval_every) and ((epoch + 1) % self.eval_every == 0 or last)
        if tested:
            acc, probs = self.evaluator.accuracy(model, self.test)
            row["test_acc"] = acc
            if progress.oracle is None or acc > progress.oracle["test_acc"]:
                progress.oracle = {"test_acc": acc, "epoch": epoch}
        if ctx.val is not None and (tested or self._selects_on_validation):
            vacc, _ = self.evaluator.accuracy(model, ctx.val)
            row["val_acc"] = vacc
            if tested and self.select == "val" and vacc > progress.best_val:
                progress.best_val = vacc
                progress.selected = {"epoch": epoch, "val_acc": vacc, "test_probs": probs}
            method.on_validation_end(model, ctx, epoch, {"val_acc": vacc})
        progress.history.append(row)
        self.loggers.log_epoch(row)
        self._report(row, len(progress.history), total)

    @property
    def _selects_on_validation(self) -> bool:
        """The method keeps something by validation figures: it gets them every epoch."""
        return type(self.method).on_validation_end is not Method.on_validation_end

    def _save(self, model, specs, progress, epoch, phase_index, phase_done) -> None:
        save_checkpoint(self.checkpoint_dir, model, specs, self.method, self.ctx,
                        {"epoch": epoch, "phase_index": phase_index, "phase_done": phase_done,
                         **dataclasses.asdict(progress)})

    def _restore(self, model, specs, ckpt) -> _Progress:
        restore(ckpt, model, specs, self.method, self.ctx.frozen_modules)
        return _Progress.from_checkpoint(ckpt)

    def _stepping(self, model):
        """The module training steps call: `model` itself, or with `compile` one torch.compile
        wrapper of it (sharing its parameters, so checkpoints and predictions use `model`)."""
        if not self.compile:
            return model
        if id(model) not in self._compiled:
            # Compiling for the CPU on a CUDA build warns that no CUDA runtime is found: true,
            # and not the user's concern.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            self._compiled[id(model)] = torch.compile(model)
        return self._compiled[id(model)]

    def _train_epoch(self, model, specs, epoch, phase):
        ctx, method = self.ctx, self.method
        seed_everything("epoch", self.seed, epoch)  # dropout etc.: same stream after a resume
        # Sample order on the CPU; augmentation parameters drawn on the device the images are on.
        order_gen = torch.Generator().manual_seed(hash_int(("order", self.seed, epoch)))
        data_gen = torch.Generator(device=ctx.device).manual_seed(
            hash_int(("data", self.seed, epoch)))
        ctx.generator.manual_seed(hash_int(("ctx", self.seed, epoch)))
        ctx.order_generator.manual_seed(hash_int(("ctx-order", self.seed, epoch)))
        ctx.begin_epoch(epoch)
        method.on_epoch_start(model, ctx, epoch)
        model.train()
        n, bs, subset = len(ctx.train), ctx.batch_size, ctx.training_indices
        weights = method.sample_weights(ctx)
        if weights is not None:
            weights = weights.float().cpu()
            if subset is not None:  # drawn from the subset alone
                weights = torch.zeros_like(weights).index_copy_(0, subset, weights[subset])
            order = torch.multinomial(weights, ctx.steps_per_epoch * bs,
                                      replacement=True, generator=order_gen)
        elif subset is not None:
            order = subset[torch.randperm(len(subset), generator=order_gen)]
        else:
            order = torch.randperm(n, generator=order_gen)
        batches = [order[i * bs:(i + 1) * bs] for i in range(ctx.steps_per_epoch)]
        views = method.views
        companions = method.batch_companions

        def make(idx):
            # A method may give no companions for a batch (a config that switches them off).
            return make_batch(ctx.train, idx, views, lambda v, raw: self._view(v, raw, data_gen),
                              ctx.device, companions(idx) if companions is not None else None,
                              method.companion_views)

        losses, pending, t0, seen = [], [], time.time(), 0
        read_every = loss_read_interval(ctx.device)

        def read_losses():
            values = torch.stack(pending).float().cpu().tolist()
            pending.clear()
            bad = next((v for v in values if not np.isfinite(v)), None)
            if bad is not None:
                raise FloatingPointError(f"loss became {bad} at epoch {epoch}")
            losses.extend(values)

        prefetch = Prefetcher(make, batches)
        total_epochs = ctx.epochs
        try:
            with progress_bar(f"epoch {epoch + 1}/{total_epochs}", len(batches),
                              self.show_progress) as advance:
                for step, batch in enumerate(prefetch):
                    with ctx.autocast():
                        loss = method.training_step(self._stepping(model), batch, ctx)
                    pending.append(loss.detach().reshape(()))
                    if (step + 1) % read_every == 0:
                        read_losses()
                    for s in specs:
                        s.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    for s in specs:
                        if s.clip_grad_norm:
                            params = [p for g in s.optimizer.param_groups for p in g["params"]]
                            torch.nn.utils.clip_grad_norm_(params, s.clip_grad_norm)
                        s.optimizer.step()
                        if s.scheduler is not None and s.interval == "step":
                            s.scheduler.step()
                    seen += len(batch["index"])
                    advance(1, info=f"loss {np.mean(losses[-20:]) if losses else float('nan'):.3f} "
                                    f"{seen / max(1e-9, time.time() - t0):.0f} img/s")
            if pending:
                read_losses()
        finally:
            prefetch.close()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        secs = time.time() - t0
        row = {"epoch": epoch, "phase": phase.name, "loss": float(np.mean(losses)),
               "lr": float(specs[0].optimizer.param_groups[0]["lr"]) if specs else None,
               "images_per_s": seen / max(1e-9, secs), "seconds": secs}
        row.update(ctx.end_epoch())
        return row, seen, secs

    def _view(self, spec, raw, gen):
        x = apply_view(spec, raw, gen)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _report(self, row, done, total):
        parts = [f"epoch {done}/{total}", f"loss {row['loss']:.4f}",
                 f"{row['images_per_s']:.0f} img/s"]
        if "test_acc" in row:
            parts.append(f"test acc {100 * row['test_acc']:.2f}")
        if "val_acc" in row:
            parts.append(f"val acc {100 * row['val_acc']:.2f}")
        console.print("  " + " · ".join(parts), highlight=False)

    def _finish(self, model, progress: _Progress, t_start: float) -> EngineResult:
        ctx, method, ev = self.ctx, self.method, self.evaluator
        ctx.begin_epoch(ctx.epoch + 1)  # the trained model: train predictions are stale
        test = ev.scored(model, self.test)
        n = len(ctx.train)
        train_probs = ctx.train_predictions("none").cpu().numpy() if n else None
        scores = method.noise_scores(model, ctx)
        if scores is not None and not isinstance(scores, dict):
            scores = {"score": scores}
        where = member_name(method, "noise_scores")
        scores = {k: _per_train_sample(v, n, f"{where}[{k!r}]", float)
                  for k, v in (scores or {}).items()}
        decisions = method.noise_decisions(model, ctx)
        if decisions is not None:
            decisions = _per_train_sample(decisions, n, member_name(method, "noise_decisions"),
                                          bool)
        selected = progress.selected
        if selected is not None:
            sp = selected.pop("test_probs")
            selected["test_acc"] = float((sp.argmax(1) == self.test.labels.numpy()).mean())
            selected["test_probs"] = sp
        subset = ctx.training_indices
        return EngineResult(
            model=model, history=progress.history, test_probs=test.probs,
            test_uncertainty=test.uncertainty, test_members=test.members,
            test_extras={k: float(np.mean(v)) for k, v in test.extras.items()},
            oracle=progress.oracle, selected=selected, per_sample=progress.per_sample,
            train_probs=train_probs, noise_scores=scores, noise_decisions=decisions,
            method_results=method.extra_results() or {},
            flops_per_image=ev.flops_per_image(model), params=ev.params(model),
            wall_time_s=time.time() - t_start,
            images_per_s=progress.img_count / max(1e-9, progress.train_time),
            resumed_from=self.resumed_from, distributions=set(progress.distributions),
            training_subset=None if subset is None else {"n": len(subset), "of": n})


def _check_distribution(arr: np.ndarray, n: int, k: int, where: str) -> None:
    """A per-sample distribution as it is returned, so a broken one stops the run at once
    (an epoch not built yet may be all NaN)."""
    if arr.shape != (n, k):
        raise PluginError(f"{where}: a distribution must be [N_train={n}, K={k}], got "
                          f"{list(arr.shape)}")
    why = distribution_problem(arr, n, k)
    if why is not None:
        raise PluginError(f"{where}: a distribution's rows must be finite, non-negative and "
                          f"sum to 1 ({why})")


def _per_train_sample(v, n: int, where: str, kind) -> np.ndarray:
    """A method's per-training-sample output as numpy, or one line naming the member."""
    arr = _np(v)
    if arr.shape != (n,):
        raise PluginError(f"{where} must be [N_train={n}], got {list(arr.shape)}")
    if kind is float and not np.isfinite(arr.astype(np.float64)).all():
        raise PluginError(f"{where} has non-finite values")
    return arr.astype(bool) if kind is bool else arr


def _np(v):
    return v.detach().float().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
