"""The conformance kit: one call that checks a method against the contract.

    from ferbench.testing import check_method
    check_method("mymethod")          # or check_method(MyMethodClass)

`tiny_context` and `build_model` give a plugin's own unit tests the same
context without a run. The kit runs on a tiny synthfer set with the method's
`quick` preset and raises
AssertionError naming the broken rule. What it checks: the method builds;
several optimisation steps on one fixed batch without augmentation lower the
training loss; predictions are probabilities of the right shape; optional
outputs (uncertainty, members, noise scores and decisions, per-epoch arrays)
have the right shapes; method state survives a save/load round trip; a full
run through the engine under noise writes its result and nothing outside the
results folder.
"""

from __future__ import annotations

import io
import os
import tempfile
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
    from .config import compose_run, to_method_config
    from .datasets.base import open_dataset
    from .datasets.synthfer import SynthFER
    from .context import build_context
    from .device import resolve_device
    from .protocols import Noise, finish_view

    name, cls = _method_class(method)
    ds = open_dataset(SynthFER(), None, None, {**TINY, **(data_options or {})})
    view = finish_view(Noise().apply(ds, {"rate": noise_rate, "noise_seed": 0}), {})
    cfg = compose_run(name, cls, "quick", {"method.epochs": epochs,
                                           "method.batch_size": batch_size}, list(overrides))
    mcfg = to_method_config(cls, cfg)
    ctx, _, _ = build_context(view, mcfg, mode="L", device=resolve_device("cpu"),
                              precision="fp32", show_progress=False)
    return cls(mcfg), ctx


def build_model(method, ctx):
    """`method.build(ctx)`, with `ctx.train_predictions` bound to the model as the engine does."""
    from .evaluation import Evaluator

    model = method.build(ctx)
    assert isinstance(model, torch.nn.Module), \
        f"{type(method).__name__}.build must return an nn.Module"
    Evaluator(method, ctx).bind(model)
    return model


def check_method(method, steps: int = 30, overrides=(), workdir: str | Path | None = None
                 ) -> dict:
    """Check `method` (a registered name or a Method class) against the contract."""
    from .context import make_batch
    from .data.augment import apply_view
    from .runner import RunRequest, run

    name, cls = _method_class(method)
    report: dict = {"method": name}
    tmp = Path(workdir or tempfile.mkdtemp(prefix="ferbench-conformance-"))
    old_cache = os.environ.get("FERBENCH_CACHE")
    os.environ["FERBENCH_CACHE"] = str(tmp / "cache")
    try:
        m, ctx = tiny_context(method, overrides)
        mcfg = m.config
        torch.manual_seed(0)
        model = build_model(m, ctx)

        # 1. a fixed batch without augmentation: the loss must go down
        idx = torch.arange(16)
        comp = m.batch_companions(idx) if m.batch_companions is not None else None
        assert comp is None or comp.shape[0] == 16, \
            "batch_companions must return [B, C] indices"
        batch = make_batch(ctx.train, idx, m.views,
                           lambda v, raw: apply_view("none", raw, ctx.generator), ctx.device,
                           comp)
        specs = m.configure_optimizers(model, ctx)
        params = [p for p in model.parameters() if p.requires_grad]
        opts = [s.optimizer for s in specs] if specs else [torch.optim.Adam(params, lr=1e-3)]
        model.train()
        torch.manual_seed(0)
        first = float(m.training_step(model, batch, ctx).detach())
        assert np.isfinite(first), f"{name}.training_step returned a non-finite loss"
        for _ in range(steps):
            loss = m.training_step(model, batch, ctx)
            assert loss.ndim == 0, f"{name}.training_step must return a scalar tensor"
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()
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
        n = len(ctx.train)
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

        # 5. a whole run under noise writes only inside its results folder
        out = tmp / "results"
        cwd = Path.cwd()
        scratch = tmp / "cwd"
        scratch.mkdir(exist_ok=True)
        os.chdir(scratch)
        try:
            paths = run(RunRequest(methods=[name], protocols=["noise30"], data_options=TINY,
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
