"""MAN: the division rule, each loss against hand-computed values, the λ schedule, the warm-up
length, the division pass and its outputs, state round trip, and the conformance kit."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from ferbench_man.method import (
    AMBIGUOUS,
    CLEAN,
    MAN,
    NOISY,
    MANConfig,
    TwoNets,
    amb_loss,
    ce_pair,
    consistency,
    divide,
    lam_schedule,
    reduce_subset,
    sym_kl,
    warmup_epochs,
)
from torch import nn

import ferbench.models  # noqa: F401  (registers ferbench_resnet_tiny with timm)
from ferbench.testing import build_model, tiny_context
from ferbench.errors import ConfigError
from ferbench.method import PerSample
from ferbench.nn import normalize

K = 3


def softmax(row):
    z = sum(math.exp(v) for v in row)
    return [math.exp(v) / z for v in row]


def ce(row, y):
    return -math.log(softmax(row)[y])


def kl(p, q):  # KL(p‖q)
    return sum(a * math.log(a / b) for a, b in zip(p, q))


L1 = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
L2 = [[0.0, 2.0, 0.0], [1.0, -1.0, 0.5]]
Y = [0, 1]


# ---- division --------------------------------------------------------------------------
def test_division_both_rules_every_case():
    y = torch.tensor([0, 0, 0, 0, 0])
    p1 = torch.tensor([0, 0, 1, 2, 2])  # clean, amb (net2 wrong), amb (net1 wrong),
    p2 = torch.tensor([0, 1, 0, 2, 3])  # both wrong agreeing, both wrong disagreeing
    assert divide(p1, p2, y, "both_wrong").tolist() == [CLEAN, AMBIGUOUS, AMBIGUOUS, NOISY,
                                                        NOISY]
    assert divide(p1, p2, y, "agree_wrong").tolist() == [CLEAN, AMBIGUOUS, AMBIGUOUS, NOISY,
                                                         AMBIGUOUS]


# ---- losses against plain formulas -----------------------------------------------------------
def test_losses_match_hand_computed_values():
    l1, l2, y = torch.tensor(L1), torch.tensor(L2), torch.tensor(Y)
    want_ce = [0.5 * (ce(a, t) + ce(b, t)) for a, b, t in zip(L1, L2, Y)]
    assert torch.allclose(ce_pair(l1, l2, y), torch.tensor(want_ce), atol=1e-6)
    want_kl = [0.5 * (kl(softmax(b), softmax(a)) + kl(softmax(a), softmax(b)))
               for a, b in zip(L1, L2)]
    assert torch.allclose(sym_kl(l1, l2), torch.tensor(want_kl), atol=1e-6)
    assert torch.allclose(sym_kl(l1, l2, detach=True), torch.tensor(want_kl), atol=1e-6)
    lam = 0.3
    want_amb = [(1 - lam) * c + lam * k for c, k in zip(want_ce, want_kl)]
    assert torch.allclose(amb_loss(l1, l2, y, lam), torch.tensor(want_amb), atol=1e-6)
    # weak/strong: net1 weak = L1, strong = L2; net2 weak = L2, strong = L1 reversed
    s2 = [row[::-1] for row in L1]
    want_mse = [0.5 * (sum((a - b) ** 2 for a, b in zip(softmax(w1), softmax(s1))) / K
                       + sum((a - b) ** 2 for a, b in zip(softmax(w2), softmax(t2))) / K)
                for w1, s1, w2, t2 in zip(L1, L2, L2, s2)]
    got = consistency(l1, l2, l2, torch.tensor(s2))
    assert torch.allclose(got, torch.tensor(want_mse), atol=1e-7)


def test_subset_normalisation_and_absent_subset():
    v = torch.tensor([1.0, 2.0, 3.0])
    assert float(reduce_subset(v, 6, "subset")) == pytest.approx(2.0)
    assert float(reduce_subset(v, 6, "batch")) == pytest.approx(1.0)
    assert float(reduce_subset(torch.tensor([4.0]), 8, "subset")) == 4.0  # a lone sample
    assert float(reduce_subset(torch.tensor([4.0]), 8, "batch")) == 0.5
    assert float(reduce_subset(torch.zeros(0), 8, "subset")) == 0.0


def test_mutual_kl_has_no_stop_gradient_by_default():
    grads = []
    for detach in (False, True):
        l2 = torch.tensor(L2, requires_grad=True)
        sym_kl(torch.tensor(L1), l2, detach).sum().backward()
        grads.append(l2.grad)
    assert not torch.allclose(grads[0], grads[1])


# ---- the λ schedule and the warm-up ------------------------------------------------------------
def test_lambda_schedule_checkpoints():
    assert lam_schedule(11, 100) == pytest.approx(0.5455, abs=1e-3)
    assert lam_schedule(90, 100) == pytest.approx(0.9)
    assert lam_schedule(100, 100) == pytest.approx(0.8928, abs=1e-3)
    # ferbench epoch 10 (from 0) is the code's epoch 11, the first after a 10-epoch warm-up
    assert MAN(MANConfig())._lam(SimpleNamespace(epoch=10, epochs=100)) == \
        pytest.approx(lam_schedule(11, 100))


@pytest.mark.parametrize("epochs,frac,want", [(100, 0.1, 10), (8, 0.125, 1), (4, 0.1, 1),
                                              (2, 0.1, 1), (2, 0.9, 1), (1, 0.1, 0),
                                              (10, 0.0, 0), (3, 0.5, 2), (20, 0.1, 2)])
def test_warmup_length(epochs, frac, want):
    assert warmup_epochs(epochs, frac) == want
    assert want < epochs or epochs == 0


def test_config_is_checked():
    with pytest.raises(ConfigError):
        MAN(MANConfig(division="sometimes"))
    with pytest.raises(ConfigError):
        MAN(MANConfig(warmup_frac=1.0))
    with pytest.raises(ConfigError):
        MAN(MANConfig(views=["weak"]))



@pytest.mark.parametrize("override,problem", [
    ("weight_decay=-1", "weight_decay=-1.0: must be >= 0.0"),
    ("lr_gamma=-1", "lr_gamma=-1.0: must be in [0.0, 1.0]"),      # a negative learning rate
    ("lam_peak_frac=0", "lam_peak_frac=0.0: must be above 0"),     # λ(e) divides by it
    ("w_noisy=nan", "w_noisy=nan: must be a finite number"),
    ("lam_max=inf", "lam_max=inf: must be a finite number"),
])
def test_a_value_man_cannot_train_with_is_one_line_before_anything_is_written(
        tmp_path, override, problem):
    from click.testing import CliRunner

    from ferbench.cli import cli

    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--method", "man", "-o", "n_train=64", "-o",
                                   "n_test=32", "--epochs", "2", "--device", "cpu", override,
                                   "--out", str(out)])
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"ferbench: error: {problem}"), line
    assert not out.exists() or not any(out.rglob("*.*"))

# ---- training_step on a small two-network model ---------------------------------------------
def small_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K))


def step_setup(subset, **cfg):
    b = len(subset)
    g = torch.Generator().manual_seed(0)
    batch = {"index": torch.arange(b), "label": torch.arange(b) % K,
             "views": {"weak": torch.rand(b, 3, 8, 8, generator=g),
                       "strong": torch.rand(b, 3, 8, 8, generator=g)}}
    logs = {}
    ctx = SimpleNamespace(epoch=5, epochs=10, train=range(b),
                          log=lambda k, v: logs.setdefault(k, float(v)))
    m = MAN(MANConfig(warmup_frac=0.1, **cfg))
    m._subset, m._division_epoch = torch.tensor(subset), 5
    return m, TwoNets(small_net(1), small_net(2)), batch, ctx, logs


@pytest.mark.parametrize("code", [CLEAN, AMBIGUOUS, NOISY])
def test_each_term_reaches_both_networks(code):
    m, model, batch, ctx, logs = step_setup([code] * 4)
    m.training_step(model, batch, ctx).backward()
    for net in (model.net1, model.net2):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert logs[f"loss_{('clean', 'ambiguous', 'noisy')[code]}"] > 0


def test_step_assembles_the_terms():
    subset = [CLEAN, CLEAN, AMBIGUOUS, NOISY, CLEAN, AMBIGUOUS]
    m, model, batch, ctx, _ = step_setup(subset)
    model.eval()  # BatchNorm off: separate and joint forwards give the same logits
    loss = m.training_step(model, batch, ctx)
    with torch.no_grad():
        w1, w2 = model(normalize(batch["views"]["weak"]))
        s1, s2 = model(normalize(batch["views"]["strong"]))
    y, s = batch["label"], torch.tensor(subset)
    c, a, n = (s == CLEAN), (s == AMBIGUOUS), (s == NOISY)
    lam = lam_schedule(6, 10)
    want = (ce_pair(w1[c], w2[c], y[c]).mean()
            + 0.6 * amb_loss(w1[a], w2[a], y[a], lam).mean()
            + 1.0 * consistency(w1[n], s1[n], w2[n], s2[n]).mean())
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    m2, _, _, _, _ = step_setup(subset, subset_forward="joint")
    assert m2.training_step(model, batch, ctx).item() == pytest.approx(want.item(), rel=1e-5)
    m3, _, _, _, _ = step_setup(subset, subset_norm="batch")
    want_b = (ce_pair(w1[c], w2[c], y[c]).sum() + 0.6 * amb_loss(w1[a], w2[a], y[a], lam).sum()
              + consistency(w1[n], s1[n], w2[n], s2[n]).sum()) / len(subset)
    assert m3.training_step(model, batch, ctx).item() == pytest.approx(want_b.item(), rel=1e-5)


def test_per_batch_division_records_the_step():
    m, model, batch, ctx, _ = step_setup([CLEAN] * 4, division="per_batch")
    m._subset = None
    m.training_step(model, batch, ctx)
    assert m._subset.shape == (4,) and bool((m._subset >= 0).all())
    assert m._score.shape == (4,) and not bool(m._score.isnan().any())


# ---- the division pass on a real context ----------------------------------------------------
def test_division_pass_outputs_and_state_round_trip():
    m, ctx = tiny_context("man", ["warmup_frac=0.25"], epochs=4, data_options={"n_train": 20})
    torch.manual_seed(0)
    model = build_model(m, ctx)
    assert not torch.equal(model.net1.fc.weight, model.net2.fc.weight)  # heads seeded apart
    n = len(ctx.train)
    assert m.noise_scores(model, ctx).shape == (n,) and m.noise_decisions(model, ctx) is None
    warm = m.on_epoch_end(model, ctx, 0)
    assert "share_noisy" not in warm and warm["in_noisy"].values.isnan().all()
    model.train()
    ctx.epoch = 1
    m.on_epoch_start(model, ctx, 1)
    assert model.training  # the pass leaves the mode as it found it
    scores, decisions = m.noise_scores(model, ctx), m.noise_decisions(model, ctx)
    assert scores.shape == (n,) and bool(((scores >= 0) & (scores <= 1)).all())
    assert decisions.shape == (n,) and decisions.dtype == torch.bool
    end = m.on_epoch_end(model, ctx, 1)
    shares = [end[f"share_{s}"] for s in ("clean", "ambiguous", "noisy")]
    assert sum(shares) == pytest.approx(1.0)
    assert isinstance(end["in_noisy"], PerSample)
    assert torch.equal(end["in_noisy"].values.bool(), decisions)
    pred = m.predict(model.eval(), ctx.train.images(torch.arange(5), "none"))
    assert pred.members.shape == (5, 2, ctx.num_classes) and torch.allclose(pred.probs.sum(1), torch.ones(5))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = MAN(m.config)
    fresh.load_state_dict(torch.load(buf, weights_only=False))
    assert torch.equal(fresh.noise_decisions(model, ctx), decisions)
    assert torch.equal(fresh.noise_scores(model, ctx), scores)
    assert fresh._division_epoch == 1


# ---- the contract ------------------------------------------------------------------------------
@pytest.mark.slow
def test_man_meets_the_contract(tmp_path):
    from ferbench.testing import check_method

    report = check_method("man", workdir=tmp_path)
    assert report["loss_last"] < report["loss_first"]


def test_a_setting_only_man_has_stops_a_two_method_run_before_either_trains(tmp_path):
    from click.testing import CliRunner

    from ferbench.cli import cli

    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--method", "man", "--method", "baseline",
                                   "-o", "n_train=64", "-o", "n_test=32", "--epochs", "1",
                                   "--device", "cpu", "warmup_frac=0.5", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("ferbench: error: method baseline: unknown config key "
                                 "'warmup_frac'")
    assert "Traceback" not in res.output and not list(out.rglob("seed*.json"))
