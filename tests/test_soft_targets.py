"""Label-carrying extras as distributions (`labels.extra_distributions`) and the baseline's
`soft_target`: trained on under clean, refused in one line where the protocol withholds it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferbench.errors import ConfigError
from ferbench.labels import BASIC7, extra_distributions
from ferbench.methods.baseline import soft_targets
from ferbench.nn import normalize
from ferbench.testing import build_model, tiny_context

SMALL = {"n_train": 40, "n_test": 8}

# FERPlus columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
# unknown, NF
VOTES = np.array([
    [4, 3, 0, 0, 0, 0, 0, 2, 1, 0],      # contempt and unknown dropped under BASIC7
    [0, 0, 1, 0, 0, 0, 1, 0, 0, 8],      # NF dropped
    [0, 0, 0, 0, 0, 0, 0, 3, 2, 5],      # no vote on the run's seven classes
], dtype=float)


def test_ferplus_votes_become_distributions_over_the_runs_classes():
    got = extra_distributions("votes", VOTES, BASIC7)
    assert got.shape == (3, 7)
    assert np.allclose(got[0], [4 / 7, 3 / 7, 0, 0, 0, 0, 0])
    assert np.allclose(got[1], [0, 0, 0.5, 0, 0, 0, 0.5])
    assert np.isnan(got[2]).all()
    # with contempt among the classes, and in another order
    got = extra_distributions("votes", VOTES, ("contempt", "neutral", "happiness"))
    assert np.allclose(got[0], [2 / 9, 4 / 9, 3 / 9])
    assert np.allclose(got[2], [1.0, 0.0, 0.0])
    # the eight-column form (no unknown, NF)
    assert np.allclose(extra_distributions("votes", VOTES[:2, :8], BASIC7),
                       extra_distributions("votes", VOTES[:2], BASIC7))


def test_an_array_over_the_runs_classes_is_normalised_per_row():
    got = extra_distributions("distribution", torch.tensor([[2.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
                              ("neutral", "happiness", "sadness"))
    assert np.allclose(got[0], [0.5, 0.25, 0.25]) and np.isnan(got[1]).all()
    with pytest.raises(ValueError, match="4 columns"):
        extra_distributions("distribution", np.ones((2, 4)), ("neutral", "happiness"))
    with pytest.raises(ValueError):
        extra_distributions("distribution", np.ones(3), ("neutral", "happiness", "sadness"))


def clean_baseline(*overrides):
    """The baseline's quick config at 32 px on 40 synthfer faces under clean."""
    from ferbench.config import compose_run, to_method_config
    from ferbench.context import build_context
    from ferbench.datasets.base import open_dataset
    from ferbench.datasets.synthfer import SynthFER
    from ferbench.device import resolve_device
    from ferbench.methods.baseline import Baseline
    from ferbench.protocols import Clean, finish_view
    from ferbench.testing import TINY

    ds = open_dataset(SynthFER(), None, None, {**TINY, **SMALL})
    view = finish_view(Clean().apply(ds, {}), {})
    mcfg = to_method_config(Baseline, compose_run("baseline", Baseline, "quick", {},
                                                  ["image_size=32", *overrides]))
    ctx, _, _ = build_context(view, mcfg, mode="L", device=resolve_device("cpu"),
                              precision="fp32", show_progress=False)
    return Baseline(mcfg), ctx


def test_soft_target_trains_on_the_distribution_under_clean():
    m, ctx = clean_baseline("soft_target=distribution")
    torch.manual_seed(0)
    model = build_model(m, ctx).train()
    idx = torch.arange(8)
    x = ctx.train.images(idx, "none")
    batch = {"index": idx, "views": {"weak": x}, "label": ctx.train.labels[idx]}
    loss = m.training_step(model, batch, ctx)
    value = float(loss.detach())
    dist = ctx.train.extras["distribution"][idx].double()
    target = (dist / dist.sum(1, keepdim=True)).float()
    with torch.no_grad():
        logits = model(normalize(x)).float()
    want = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    assert value == pytest.approx(float(want), rel=1e-5)
    hard = F.cross_entropy(logits, batch["label"])
    assert value != pytest.approx(float(hard), rel=1e-3)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_face_without_a_distribution_keeps_its_one_hot_label():
    _, ctx = clean_baseline()
    dist = ctx.train.extras["distribution"].clone()
    dist[5] = 0
    ctx.train.extras["distribution"] = dist
    t = soft_targets(ctx, "distribution")
    assert torch.equal(t[5], F.one_hot(ctx.train.labels[5], ctx.num_classes).float())
    assert torch.allclose(t.sum(1), torch.ones(len(t)), atol=1e-6)


def test_a_clean_run_with_soft_targets_writes_its_result(tmp_path):
    from ferbench.runner import RunRequest, run

    paths = run(RunRequest(methods=["baseline"], protocols=["clean"], data_options=SMALL,
                           flags={"epochs": 1, "batch_size": 16, "device": "cpu",
                                  "precision": "fp32"},
                           overrides=["image_size=32", "soft_target=distribution"],
                           out=str(tmp_path / "out"), leaderboard=False, show_progress=False))
    record = json.loads(paths[0].read_text())
    assert record["config"]["method"]["soft_target"] == "distribution"
    assert np.isfinite(record["history"][0]["loss"])


def test_under_noise_soft_target_is_refused_saying_the_protocol_withholds_it():
    m, ctx = tiny_context("baseline", ["image_size=32", "soft_target=distribution"],
                          data_options=SMALL)
    with pytest.raises(ConfigError) as err:
        m.build(ctx)
    text = str(err.value)
    assert "\n" not in text and "noise30 withholds" in text and "'distribution'" in text


def test_the_cli_under_noise_stops_in_one_line_before_training(tmp_path):
    from click.testing import CliRunner

    from ferbench.cli import cli

    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", "--protocol", "noise30",
                                   "-o", "n_train=40", "-o", "n_test=8", "--epochs", "1",
                                   "--device", "cpu", "image_size=32",
                                   "soft_target=distribution", "--out", str(out)])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("ferbench: error:")]
    assert len(errors) == 1 and "noise30 withholds" in errors[0]
    assert "Traceback" not in res.output and not list(out.rglob("seed*.json"))



@pytest.mark.parametrize("sweep", [[], ["--jobs", "2"]], ids=["runs", "sweep"])
def test_soft_targets_over_clean_and_noise_stop_before_the_clean_run_trains(tmp_path, sweep):
    from click.testing import CliRunner

    from ferbench.cli import cli

    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--method", "baseline", "--protocol", "clean,noise30",
                                   "-o", "n_train=40", "-o", "n_test=8", "--epochs", "1",
                                   "--device", "cpu", "image_size=32", *sweep,
                                   "soft_target=distribution", "--out", str(out)])
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("ferbench: error:")]
    assert "soft_target=distribution: the protocol noise30 withholds" in line
    assert not list(out.rglob("seed*.json")), "the clean run trained before the refusal"

@pytest.mark.parametrize("noisy", [False, True])
def test_an_unknown_soft_target_is_named(noisy):
    if noisy:
        m, ctx = tiny_context("baseline", ["image_size=32", "soft_target=nosuch"],
                              data_options=SMALL)
    else:
        m, ctx = clean_baseline("soft_target=nosuch")
    with pytest.raises(ConfigError) as err:
        m.build(ctx)
    assert "soft_target=nosuch" in str(err.value) and "no extra 'nosuch'" in str(err.value)
