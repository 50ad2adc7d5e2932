"""The conformance kit: one call that checks a method against the contract.

    from ferbench.testing import check_method
    check_method("mymethod")          # or check_method(MyMethodClass)

`tiny_context` and `build_model` give a plugin's own unit tests the same
context without a run. The kit runs on a tiny synthfer set with the method's
`quick` preset and raises
AssertionError naming the broken rule. What it checks: the method builds;
several optimisation steps on one fixed batch without augmentation lower the
training loss (with `ctx.phase` set to the first of its `phases`, which must
add up to the run's epochs); predictions are probabilities of the right shape;
optional outputs (uncertainty, members, noise scores and decisions, sample
weights, a fixed training subset, companions, per-epoch per-sample arrays) have
the right shapes; method state survives a save/load round trip; a run
interrupted in the middle, and one interrupted at each phase boundary (before
and after `on_phase_end`), resumes to the uninterrupted run's predictions and
state; a full run through the engine under noise writes its result and nothing
outside the results folder.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TINY = {"n_train": 96, "n_test": 48, "seed": 0}


def _method_class(method):
    if isinstance(method, str):
        from .plugins import registry

        return method, registry().get("methods", method)
    return getattr(method, "__name__", "method"), method


def _state_equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_state_equal(a[k], b[k])
                                                                    for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def tiny_context(method, overrides=(), epochs: int = 2, batch_size: int = 16,
                 noise_rate: float = 30, data_options: dict | None = None):
    """A method instance and a `RunContext` on a tiny synthfer set under generated noise.

    For a plugin's unit tests: everything the engine would hand the method,
    with no run around it. Images come through the decoded cache, so set
    `FERBENCH_CACHE` (ferbench's own tests do) to keep it out of the user's.
    """
    method, ctx, _ = _tiny_run(method, overrides, epochs, batch_size, noise_rate, data_options)
    return method, ctx


def _tiny_run(method, overrides=(), epochs=2, batch_size=16, noise_rate=30.0,
              data_options=None):
    """`tiny_context`, and the test split the engine scores."""
    from .config import compose_run, to_method_config
    from .context import build_context
    from .datasets.base import open_dataset
    from .datasets.synthfer import SynthFER
    from .device import resolve_device
    from .protocols import Noise, finish_view

    name, cls = _method_class(method)
    ds = open_dataset(SynthFER(), None, None, {**TINY, **(data_options or {})})
    view = finish_view(Noise().apply(ds, {"rate": noise_rate, "noise_seed": 0}), {})
    cfg = compose_run(name, cls, "quick", {"method.epochs": epochs,
                                           "method.batch_size": batch_size}, list(overrides))
    mcfg = to_method_config(cls, cfg)
    ctx, test, _ = build_context(view, mcfg, mode="L", device=resolve_device("cpu"),
                                 precision="fp32", show_progress=False)
    return cls(mcfg), ctx, test


def build_model(method, ctx):
    """`method.build(ctx)`, with `ctx.train_predictions` bound to the model as the engine does."""
    from .evaluation import Evaluator

    model = method.build(ctx)
    assert isinstance(model, torch.nn.Module), \
        f"{type(method).__name__}.build must return an nn.Module"
    Evaluator(method, ctx).bind(model)
    return model


def check_method(method, steps: int = 30, overrides=(), workdir: str | Path | None = None,
                 data_options: dict | None = None) -> dict:
    """Check `method` (a registered name or a Method class) against the contract.

    `data_options` go to the tiny synthfer set (`{"n_val": 32}`: a validation split, so a
    method that keeps its best-on-validation state is checked with it)."""
    from .context import make_batch
    from .data.augment import apply_view
    from .runner import RunRequest, run

    name, cls = _method_class(method)
    report: dict = {"method": name}
    tmp = Path(workdir or tempfile.mkdtemp(prefix="ferbench-conformance-"))
    old_cache = os.environ.get("FERBENCH_CACHE")
    os.environ["FERBENCH_CACHE"] = str(tmp / "cache")
    try:
        m, ctx = tiny_context(method, overrides, data_options=data_options)
        mcfg = m.config
        torch.manual_seed(0)
        model = build_model(m, ctx)
        n = len(ctx.train)
        phases = _check_phases(name, m, ctx)
        ctx.phase = phases[0]

        # 1. a fixed batch without augmentation: the loss must go down
        idx = torch.arange(16)
        comp = m.batch_companions(idx) if m.batch_companions is not None else None
        if comp is not None:
            comp = torch.as_tensor(comp)
            assert comp.ndim == 2 and comp.shape[0] == 16 and not comp.is_floating_point(), \
                f"{name}.batch_companions must return LongTensor [B, C] (or None), got " \
                f"{comp.dtype} {list(comp.shape)}"
            assert bool(((comp >= 0) & (comp < n)).all()), \
                f"{name}.batch_companions returned positions outside 0..{n - 1}"
        batch = make_batch(ctx.train, idx, m.views,
                           lambda v, raw: apply_view("none", raw, ctx.generator), ctx.device,
                           comp, m.companion_views)
        specs = m.configure_optimizers(model, ctx)
        params = [p for p in model.parameters() if p.requires_grad]
        opts = [s.optimizer for s in specs] if specs else [torch.optim.Adam(params, lr=1e-3)]
        model.train()
        torch.manual_seed(0)
        first = float(m.training_step(model, batch, ctx).detach())
        assert np.isfinite(first), f"{name}.training_step returned a non-finite loss"
        run_steps = ctx.epochs * ctx.steps_per_epoch
        for step in range(steps):
            loss = m.training_step(model, batch, ctx)
            assert loss.ndim == 0, f"{name}.training_step must return a scalar tensor"
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()
            # Per-step schedules move as the engine moves them (a warm-up from a zero rate
            # would otherwise never train), within the run's length that they were built for.
            for spec in specs or ():
                if spec.scheduler is not None and spec.interval == "step" and \
                        step < run_steps - 1:
                    spec.scheduler.step()
        torch.manual_seed(0)
        last = float(m.training_step(model, batch, ctx).detach())
        report["loss_first"], report["loss_last"] = first, last
        assert last < first, (f"{name}: {steps} optimisation steps on one fixed batch did not "
                              f"lower the training loss ({first:.4f} → {last:.4f})")

        # 2. predictions
        model.eval()
        with torch.no_grad():
            pred = m.predict(model, ctx.train.images(torch.arange(8), "none"))
        k = ctx.num_classes
        p = pred.probs.float()
        assert p.shape == (8, k), f"{name}.predict: probs must be [B, {k}], got {tuple(p.shape)}"
        assert bool((p >= 0).all()) and torch.allclose(p.sum(1), torch.ones(8), atol=1e-3), \
            f"{name}.predict: probs must be non-negative rows summing to 1"
        if pred.uncertainty is not None:
            assert pred.uncertainty.shape == (8,), f"{name}.predict: uncertainty must be [B]"
        if pred.members is not None:
            assert pred.members.ndim == 3 and pred.members.shape[0] == 8 and \
                pred.members.shape[2] == k, f"{name}.predict: members must be [B, M, K]"
        model.train()

        # 3. optional outputs
        _check_sampling(name, m, ctx)
        _check_per_sample(name, m, model, ctx)
        scores = m.noise_scores(model, ctx)
        if scores is not None:
            for key, s in (scores.items() if isinstance(scores, dict) else [("score", scores)]):
                s = torch.as_tensor(s)
                assert s.shape == (n,), f"{name}.noise_scores[{key}] must be [N_train={n}]"
                assert bool(torch.isfinite(s.float()).all()), \
                    f"{name}.noise_scores[{key}] has non-finite values"
        decisions = m.noise_decisions(model, ctx)
        if decisions is not None:
            assert torch.as_tensor(decisions).shape == (n,), \
                f"{name}.noise_decisions must be bool [N_train={n}]"

        # 4. state round trip
        state = m.state_dict()
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        fresh = cls(mcfg)
        fresh.load_state_dict(torch.load(buf, weights_only=False))
        assert _state_equal(state, fresh.state_dict()), \
            f"{name}: state_dict() does not survive a save/load round trip"

        # 5. an interrupted run resumes to the same predictions and state
        report["resumed"] = _check_resume(name, method, overrides, tmp, len(phases),
                                             data_options)

        # 6. a whole run under noise writes only inside its results folder
        out = tmp / "results"
        cwd = Path.cwd()
        scratch = tmp / "cwd"
        scratch.mkdir(exist_ok=True)
        os.chdir(scratch)
        try:
            paths = run(RunRequest(methods=[name], protocols=["noise30"],
                                   data_options={**TINY, **(data_options or {})},
                                   flags={"epochs": 2, "batch_size": 16, "device": "cpu"},
                                   overrides=list(overrides), out=str(out), leaderboard=False,
                                   show_progress=False)) \
                if _registered(name, cls) else []
        finally:
            os.chdir(cwd)
        assert not any(scratch.iterdir()), \
            f"{name}: the run wrote into the working directory: {sorted(scratch.iterdir())}"
        for path in paths:
            assert path.exists(), f"{name}: the run left no result file"
        report["results"] = [str(p) for p in paths]
        return report
    finally:
        if old_cache is None:
            os.environ.pop("FERBENCH_CACHE", None)
        else:
            os.environ["FERBENCH_CACHE"] = old_cache


def _registered(name, cls) -> bool:
    from .plugins import registry

    provided = registry().methods.get(name)
    return provided is not None and provided.obj is cls


def _check_phases(name, m, ctx) -> list:
    from .method import Phase

    phases = m.phases(ctx) or [Phase("train", ctx.epochs)]
    assert all(isinstance(p, Phase) and p.epochs >= 0 for p in phases), \
        f"{name}.phases must return Phase(name, epochs >= 0) values"
    assert sum(p.epochs for p in phases) == ctx.epochs, \
        f"{name}.phases: its epochs add up to {sum(p.epochs for p in phases)}, not the " \
        f"run's {ctx.epochs} (split_epochs divides them)"
    return phases


def _check_sampling(name, m, ctx) -> None:
    from .method import check_training_indices

    n = len(ctx.train)
    weights = m.sample_weights(ctx)
    if weights is not None:
        w = torch.as_tensor(weights).float()
        assert w.shape == (n,), f"{name}.sample_weights must be [N_train={n}], got " \
                                f"{list(w.shape)}"
        assert bool(torch.isfinite(w).all() and (w >= 0).all() and w.sum() > 0), \
            f"{name}.sample_weights must be finite, non-negative and not all zero"
    subset = m.training_indices(ctx)
    if subset is not None:
        try:
            check_training_indices(subset, n, m)
        except Exception as e:
            raise AssertionError(str(e)) from None


def _check_per_sample(name, m, model, ctx) -> None:
    from .method import PerSample

    n, k = len(ctx.train), ctx.num_classes
    for key, v in (m.on_epoch_end(model, ctx, 0) or {}).items():
        if not isinstance(v, PerSample):
            continue
        arr = torch.as_tensor(v.values).float()
        assert arr.ndim >= 1 and arr.shape[0] == n, \
            f"{name}.on_epoch_end: per-sample array {key!r} must be [N_train={n}, ...], got " \
            f"{list(arr.shape)}"
        if v.distribution:
            assert arr.shape == (n, k) and bool((arr >= 0).all()) and \
                torch.allclose(arr.sum(1), torch.ones(n), atol=1e-3), \
                f"{name}.on_epoch_end: distribution {key!r} must be [N_train, K={k}] rows " \
                f"of probabilities"


class _Stop(Exception):
    """The interruption the kit simulates."""


def _stopping(hook, call: int):
    """`hook` that raises `_Stop` at its `call`-th call (from 0)."""
    calls = []

    def wrapped(*args):
        calls.append(True)
        if len(calls) == call + 1:
            raise _Stop
        return hook(*args)
    return wrapped


def _check_resume(name, method, overrides, tmp: Path, n_phases: int,
                  data_options: dict | None = None) -> list[str]:
    """Runs interrupted mid-run and at each phase boundary, resumed, against one run through."""
    from .engine import Engine

    def fit(folder, resume=False, stop=None):
        m, ctx, test = _tiny_run(method, overrides, data_options=data_options)
        if stop is not None:
            member, call = stop
            setattr(m, member, _stopping(getattr(m, member), call))
        torch.manual_seed(0)
        res = Engine(m, ctx, test=test, seed=0, checkpoint_dir=folder, resume=resume,
                     show_progress=False).fit()
        return res, m.state_dict()

    def quiet_fit(*args, **kw):
        from .progress import console

        with console.capture():
            return fit(*args, **kw)

    full, full_state = quiet_fit(tmp / "resume-full")
    stops = {"mid-run": ("on_epoch_start", 1)}
    for i in range(n_phases):
        stops[f"before the end of phase {i}"] = ("on_phase_end", i)
        if i + 1 < n_phases:
            stops[f"after the end of phase {i}"] = ("on_phase_start", i + 1)
    checked = []
    for label, stop in stops.items():
        folder = tmp / f"resume-{len(checked)}"
        try:
            quiet_fit(folder, stop=stop)
        except _Stop:
            pass
        else:
            continue  # this point never comes (a phase of no epochs)
        res, state = quiet_fit(folder, resume=True)
        assert np.array_equal(res.test_probs, full.test_probs) and \
            _state_equal(state, full_state), \
            f"{name}: a run interrupted {label} and resumed differs from one run through " \
            f"(keep what training changes in state_dict, not only in attributes)"
        checked.append(label)
    return checked


def time_alternating(step, arms, rounds: int, steps: int, device, warmup: int = 1):
    """For a benchmark's arms: the seconds of each block of `steps` calls of `step(arm)` and
    each arm's peak device memory in bytes (CUDA; 0 elsewhere). After `warmup` calls per arm,
    `rounds` blocks per arm, the arms' order reversed every other round, so a machine whose
    speed drifts weighs on every arm alike; compare arms block by block."""
    cuda = torch.device(device).type == "cuda"
    for arm in arms:
        for _ in range(warmup):
            step(arm)
    seconds = {arm: [] for arm in arms}
    peak = {arm: 0 for arm in arms}
    for block in range(rounds):
        for arm in arms if block % 2 == 0 else arms[::-1]:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(steps):
                step(arm)
            if cuda:
                torch.cuda.synchronize()
                peak[arm] = max(peak[arm], torch.cuda.max_memory_allocated())
            seconds[arm].append(time.perf_counter() - t0)
    return seconds, peak

