"""LDLVA and LDL-ALSG piece by piece: the target, λ's gradient, the aggregate and the
calibration, the neighbour graph, the milestones, the centres and their loss, the
neighbour pass's BatchNorm statistics, the smoothness term, the state and its resume, and
the conformance kit."""

from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ferbench_ldl.alsg import smoothness
from ferbench_ldl.common import milestones
from ferbench_ldl.graph import Graph, build_graph, knn_disagreement, nearest
from ferbench_ldl.ldlva import (
    LDLVA,
    aggregate,
    build_target,
    calibration,
    centre_loss,
    update_centres,
)
from torch import nn

import ferbench.models  # noqa: F401  (registers ferbench_resnet_tiny with timm)
from ferbench.context import make_batch
from ferbench.data.augment import apply_view
from ferbench.errors import ConfigError
from ferbench.testing import build_model, tiny_context
from ldl_fixtures import isolated_cache, one_thread  # noqa: F401  (autouse fixtures)

SMALL = {"n_train": 40, "n_test": 8}
TINY_KEYS = ["image_size=32", "k=3"]


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def tiny_ldlva(*overrides, data=SMALL):
    """An LDLVA on 40 synthfer faces at 32 px (quick preset: ferbench_resnet_tiny, no extra
    embedding), built; the model in train mode."""
    m, ctx = tiny_context("ldlva", [*TINY_KEYS, *overrides], data_options=data)
    torch.manual_seed(0)
    model = build_model(m, ctx)
    model.train()
    return m, ctx, model


def kit_batch(m, ctx, idx):
    """A batch as the conformance kit makes it: no augmentation, companions where the
    method asks for them."""
    comp = m.batch_companions(idx) if m.batch_companions is not None else None
    return make_batch(ctx.train, idx, m.views,
                      lambda v, raw: apply_view("none", raw, ctx.generator), ctx.device,
                      comp, m.companion_views)


# ---- 1. the target --------------------------------------------------------------------------
def test_target_is_the_label_at_full_trust_the_aggregate_at_none_and_the_mix_between():
    agg = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]])
    t = build_target(torch.tensor([1.0, 0.0, 0.25]), torch.tensor([2, 0, 1]), agg)
    assert torch.equal(t[0], torch.tensor([0.0, 0.0, 1.0]))       # λ = 1: the given label
    assert torch.equal(t[1], agg[1])                               # λ = 0: the aggregate
    assert torch.allclose(t[2], torch.tensor([0.3, 0.55, 0.15]), atol=1e-7)
    assert torch.allclose(t.sum(1), torch.ones(3), atol=1e-7)


# ---- 2. which way λ moves -------------------------------------------------------------------
def test_one_sgd_step_lowers_trust_where_the_prediction_fits_the_neighbours_not_the_label():
    # Both samples are labelled 0 and their neighbours say class 1; the first one's
    # prediction agrees with the neighbours, the second one's with its label.
    y = torch.tensor([0, 0])
    agg = torch.tensor([[0.05, 0.9, 0.05], [0.05, 0.9, 0.05]])
    p = torch.tensor([[0.05, 0.9, 0.05], [0.9, 0.05, 0.05]])
    theta = torch.tensor([0.5, 0.5], requires_grad=True)
    opt = torch.optim.SGD([theta], lr=10.0, momentum=0.0)   # the code's θ optimiser
    t = build_target(torch.sigmoid(theta), y, agg)
    loss = -(t * torch.log(p + 1e-10)).sum(1).mean()
    loss.backward()
    before = theta.detach().clone()
    opt.step()
    # dL/dθ_i = σ'(θ_i) · Σ_k (onehot_k − d̃_k) · (−log p_k) / B, by hand
    s = sigmoid(0.5)
    want = []
    for row in p.tolist():
        dl_dlam = sum((o - d) * -math.log(q + 1e-10)
                      for o, d, q in zip([1, 0, 0], [0.05, 0.9, 0.05], row))
        want.append(0.5 - 10 * s * (1 - s) * dl_dlam / 2)
    assert torch.allclose(theta.detach(), torch.tensor(want), atol=1e-5)
    assert theta[0] < before[0]     # fits the neighbours: the label is trusted less
    assert theta[1] > before[1]     # fits its label: trusted more


def test_the_lambda_optimiser_is_plain_sgd_lr_10_on_the_batch_rows():
    m, ctx, model = tiny_ldlva()
    opt = m.configure_optimizers(model, ctx)[1].optimizer
    batch = kit_batch(m, ctx, torch.arange(8))
    before = m.theta.detach().clone()
    m.training_step(model, batch, ctx).backward()
    grad = m.theta.grad.clone()
    opt.step()
    assert torch.allclose(m.theta.detach()[:8], before[:8] - 10 * grad[:8], atol=1e-7)
    assert torch.equal(m.theta.detach()[8:], before[8:])
    assert bool((grad[:8] != 0).all())


def test_lambda_momentum_moves_only_the_rows_a_step_touches():
    """With momentum (the code's AffectNet 0.9), θ's rows follow Keras's sparse update:
    v ← m·v − lr·g and θ ← θ + v on the batch's rows only."""
    m, ctx, model = tiny_ldlva("lambda_momentum=0.9")
    opt = m.configure_optimizers(model, ctx)[1].optimizer
    start = m.theta.detach().clone()
    m.training_step(model, kit_batch(m, ctx, torch.arange(0, 4)), ctx).backward()
    g1 = m.theta.grad.clone()
    opt.step()
    opt.zero_grad()
    m.training_step(model, kit_batch(m, ctx, torch.arange(4, 8)), ctx).backward()
    g2 = m.theta.grad.clone()
    opt.step()
    theta = m.theta.detach()
    # rows 0..3: one step of −10·g1, untouched by the second step despite their velocity
    assert torch.allclose(theta[:4], start[:4] - 10 * g1[:4], atol=1e-6)
    assert torch.allclose(theta[4:8], start[4:8] - 10 * g2[4:8], atol=1e-6)
    assert torch.equal(theta[8:], start[8:])


# ---- 3. the aggregate and the calibration ---------------------------------------------------
def test_aggregate_weighs_neighbour_predictions_by_kernel_times_calibration():
    kernel = torch.tensor([[1.0, 0.5], [0.2, 0.8]])
    calib = torch.tensor([[0.5, 1.0], [0.25, 0.5]])        # w = [[.5, .5], [.05, .4]]
    probs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                          [[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]])
    got = aggregate(kernel, calib, probs)
    want = torch.tensor([[0.5, 0.5, 0.0], [1 / 45, 1.5 / 45, 42.5 / 45]])
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(2), atol=1e-6)


def test_calibration_is_sigmoid_of_the_net_clamped_at_minus_1_3():
    g = nn.Linear(4, 1)
    with torch.no_grad():                      # g([f_i, f_j]) = f_i[0] − f_j[0]
        g.weight.copy_(torch.tensor([[1.0, 0.0, -1.0, 0.0]]))
        g.bias.zero_()
    f_main = torch.tensor([[2.0, 5.0], [0.0, 0.0]])
    f_neigh = torch.tensor([[[1.0, 9.0], [3.0, -1.0]], [[0.5, 0.0], [2.0, 0.0]]])
    got = calibration(g, f_main, f_neigh, -1.3)
    want = torch.tensor([[sigmoid(1.0), sigmoid(-1.0)], [sigmoid(-0.5), sigmoid(-1.3)]])
    assert got.shape == (2, 2)
    assert torch.allclose(got, want, atol=1e-7)        # the main image's feature comes first
    with torch.no_grad():
        g.bias.fill_(-100.0)                            # a net that says "never similar"
    low = calibration(g, f_main, f_neigh, -1.3)
    assert torch.allclose(low, torch.full((2, 2), sigmoid(-1.3)), atol=1e-7)
    assert float(low.min().detach()) == pytest.approx(0.2142, abs=1e-4)
    with torch.no_grad():
        g.bias.fill_(5.0)
    assert bool((calibration(g, f_main, f_neigh, -1.3) < 1).all())


# ---- 4. the neighbour graph -----------------------------------------------------------------
def test_nearest_excludes_itself_puts_the_nearest_first_and_breaks_ties_by_lower_index():
    pts = torch.tensor([[0.0], [1.0], [1.0], [3.0], [0.0]])
    idx, dist = nearest(pts, 4)
    assert idx.tolist() == [[4, 1, 2, 3], [2, 0, 4, 3], [1, 0, 4, 3], [1, 2, 0, 4],
                            [0, 1, 2, 3]]
    assert dist.tolist() == [[0, 1, 1, 3], [0, 1, 1, 2], [0, 1, 1, 2], [2, 2, 3, 3],
                             [0, 1, 1, 3]]
    small, _ = nearest(pts, 2, chunk=2)     # the same answer chunk by chunk
    assert torch.equal(small, idx[:, :2])


def test_nearest_breaks_ties_that_reach_past_its_candidate_pool():
    idx, dist = nearest(torch.ones(60, 2), 3)   # 59 ties for every row, 19 candidates
    want = [[j for j in range(60) if j != i][:3] for i in range(60)]
    assert idx.tolist() == want
    assert bool((dist == 0).all())


def test_nearest_refuses_more_neighbours_than_other_samples():
    with pytest.raises(ValueError, match="k=5"):
        nearest(torch.zeros(5, 1), 5)
    with pytest.raises(ValueError):
        nearest(torch.zeros(5, 1), 0)


# (0,0) (1,1) (3,0) (0,2.5): L1 distances 0-1 2, 0-2 3, 0-3 2.5, 1-2 3, 1-3 2.5, 2-3 5.5
PTS = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0], [0.0, 2.5]])
NB = [[1, 3], [0, 3], [0, 1], [0, 1]]
D1 = torch.tensor([[2.0, 2.5], [2.0, 2.5], [3.0, 3.0], [2.5, 2.5]])


def test_graph_kernel_is_laplacian_on_the_l1_distance():
    g = build_graph(PTS, 2, tau=0.5, relative=False)
    assert g.neighbours.tolist() == NB
    assert torch.allclose(g.distance, D1)                 # L1, not Euclidean (√2 for 0-1)
    assert torch.allclose(g.kernel, torch.exp(-D1 / 0.5), atol=1e-7)
    assert g.scale == 1.0


def test_relative_graph_divides_by_the_median_kth_neighbour_distance():
    g = build_graph(PTS, 2, tau=0.5, relative=True)      # 2nd distances 2.5, 2.5, 3, 2.5
    assert g.scale == pytest.approx(2.5)
    assert torch.allclose(g.distance, D1 / 2.5, atol=1e-7)
    assert torch.allclose(g.kernel, torch.exp(-(D1 / 2.5) / 0.5), atol=1e-7)
    assert g.neighbours.tolist() == NB


def test_knn_disagreement_is_the_share_of_neighbours_with_another_label():
    nb = torch.tensor([[1, 2], [0, 3], [0, 1], [2, 0]])
    g = Graph(nb, torch.ones(4, 2), torch.ones(4, 2), 1.0)
    got = knn_disagreement(g, torch.tensor([0, 0, 0, 1]))
    assert got.tolist() == [0.0, 0.5, 0.0, 1.0]


# ---- 5. the learning-rate milestones --------------------------------------------------------
def test_milestones_are_the_codes_10_20_40_of_60():
    assert milestones(60, [1 / 6, 1 / 3, 2 / 3]) == [10, 20, 40]
    assert milestones(60, [2 / 3, 1 / 6, 1 / 3]) == [10, 20, 40]   # in any order
    assert milestones(1, [1 / 6, 1 / 3, 2 / 3]) == []


@pytest.mark.parametrize("epochs", [4, 5, 6, 8, 12])
def test_a_short_run_keeps_every_milestone_distinct_and_inside_it(epochs):
    got = milestones(epochs, [1 / 6, 1 / 3, 2 / 3])
    assert len(got) == 3
    assert got == sorted(set(got)) and 1 <= got[0] and got[-1] <= epochs - 1


@pytest.mark.parametrize("epochs", [2, 3])
def test_a_very_short_run_never_decays_twice_at_once_nor_before_training(epochs):
    got = milestones(epochs, [1 / 6, 1 / 3, 2 / 3])
    assert got == sorted(set(got)) and all(1 <= e <= epochs - 1 for e in got)


# ---- 6. and 7. the centres and the centre loss ----------------------------------------------
def test_centres_take_the_pull_step_then_the_push_step():
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    feats = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels, lam = torch.tensor([0, 0, 1]), torch.tensor([0.5, 1.0, 0.8])
    lr, push, n, dim = 0.5, 0.1, 3, 2
    # pull: c + lr · Σ_{y_n = c} λ_n (f_n − c) / (n_c + 1) / n
    c0 = [0 + lr * (0.5 * 2 + 1.0 * 0) / 3 / n, 0 + lr * (0.5 * 0 + 1.0 * 2) / 3 / n]
    c1 = [1 + lr * 0.8 * 0 / 2 / n, 0 + lr * 0.8 * 1 / 2 / n]
    # push: gradient of push · exp(−‖c0 − c1‖² / D) is ∓ push · e · 2 (c0 − c1) / D
    delta = [a - b for a, b in zip(c0, c1)]
    e = math.exp(-sum(v * v for v in delta) / dim)
    step = [lr * push * e * 2 * v / dim for v in delta]
    want = torch.tensor([[c0[0] + step[0], c0[1] + step[1]],
                         [c1[0] - step[0], c1[1] - step[1]]])
    update_centres(centres, feats, labels, lam, lr, push)
    assert torch.allclose(centres, want, atol=1e-6)


def test_the_push_moves_two_close_centres_apart():
    centres = torch.tensor([[0.0, 0.0], [0.1, 0.0]])
    feats = centres.clone()                             # no pull: features on their centres
    update_centres(centres, feats, torch.tensor([0, 1]), torch.ones(2), 0.5, 0.1)
    assert float((centres[0] - centres[1]).norm()) > 0.1
    assert centres[0, 0] < 0 and centres[1, 0] > 0.1


def test_centres_without_samples_stay_finite_where_they_coincide():
    centres = torch.zeros(3, 2)                         # where every centre starts
    update_centres(centres, torch.tensor([[1.0, 1.0]]), torch.tensor([0]), torch.ones(1),
                   0.5, 0.1)
    assert bool(torch.isfinite(centres).all())
    assert torch.equal(centres[1], centres[2])


def test_centre_loss_on_hand_numbers():
    feats = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]], requires_grad=True)
    centres = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    loss = centre_loss(feats, torch.tensor([0, 1, 0]), torch.tensor([1.0, 0.5, 2.0]), centres)
    assert float(loss.detach()) == pytest.approx(0.5 * (1 * 5 + 0.5 * 5 + 2 * 0) / 3)
    loss.backward()
    assert torch.allclose(feats.grad[0], torch.tensor([1.0, 2.0]) / 3)


# ---- 8. the neighbour pass and BatchNorm ----------------------------------------------------
def backbone_bn(model):
    return {k: v.clone() for k, v in model.named_buffers() if k.startswith("backbone.")}


def test_forward_pass_runs_the_neighbours_in_train_mode_before_the_main_images():
    m, ctx, model = tiny_ldlva("neighbour_pass=forward")
    batch = kit_batch(m, ctx, torch.arange(8))
    assert batch["companions"]["index"].shape == (8, 3)
    replay, main_only = copy.deepcopy(model), copy.deepcopy(model)
    m.training_step(model, batch, ctx)
    view = next(iter(batch["views"]))
    with torch.no_grad():
        replay(m.norm(batch["companions"]["views"][view].flatten(0, 1)))
        replay(m.norm(batch["views"][view]))
        main_only(m.norm(batch["views"][view]))
    got, want, only = backbone_bn(model), backbone_bn(replay), backbone_bn(main_only)
    counts = [k for k in got if k.endswith("num_batches_tracked")]
    assert counts and all(int(got[k]) == 2 for k in counts)       # two passes per step
    assert all(torch.equal(got[k], want[k]) for k in got)
    means = [k for k in got if k.endswith("running_mean")]
    assert any(not torch.allclose(got[k], only[k]) for k in means)


def test_cache_pass_moves_batchnorm_with_the_main_images_only():
    m, ctx, model = tiny_ldlva("neighbour_pass=cache")
    m.on_epoch_start(model, ctx, 0)                   # the memory's eval pass
    assert model.training and bool(m.mem_ready)
    batch = kit_batch(m, ctx, torch.arange(8))
    assert "companions" not in batch
    main_only = copy.deepcopy(model)
    m.training_step(model, batch, ctx)
    with torch.no_grad():
        main_only(m.norm(batch["views"][next(iter(batch["views"]))]))
    got, want = backbone_bn(model), backbone_bn(main_only)
    counts = [k for k in got if k.endswith("num_batches_tracked")]
    assert counts and all(int(got[k]) == 1 for k in counts)
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_the_targets_handed_over_at_an_epochs_end_stay_that_epochs():
    m, ctx, model = tiny_ldlva("neighbour_pass=cache")
    m.on_epoch_start(model, ctx, 0)
    m.training_step(model, kit_batch(m, ctx, torch.arange(8)), ctx)
    handed = m.on_epoch_end(model, ctx, 0)["target"].values
    at_the_end = handed.clone()
    m.training_step(model, kit_batch(m, ctx, torch.arange(8)), ctx)   # the next epoch
    assert not torch.equal(m.targets[:8].cpu(), at_the_end[:8])
    assert torch.equal(handed, at_the_end)


def test_each_epochs_targets_in_the_arrays_are_that_epochs(tmp_path, monkeypatch):
    snapshots = []
    on_epoch_end = LDLVA.on_epoch_end

    def snapshot(self, model, ctx, epoch):
        snapshots.append(self.targets.detach().cpu().clone())
        return on_epoch_end(self, model, ctx, epoch)

    monkeypatch.setattr(LDLVA, "on_epoch_end", snapshot)
    result = run_ldlva(tmp_path, "cache")[0]
    targets = np.load(result.with_suffix(".npz"))["method_target"]
    assert targets.shape == (3, SMALL["n_train"], 7) and len(snapshots) == 3
    for epoch, want in enumerate(snapshots):
        assert np.array_equal(targets[epoch], want.numpy()), epoch
    assert not np.array_equal(targets[0], targets[2])


# ---- 9. LDL-ALSG's smoothness ---------------------------------------------------------------
def test_smoothness_value_and_gradient_on_hand_numbers():
    p = torch.tensor([[0.6, 0.4], [0.2, 0.8]], requires_grad=True)
    nb = torch.tensor([[[0.5, 0.5], [1.0, 0.0]], [[0.2, 0.8], [0.0, 1.0]]],
                      requires_grad=True)
    kernel = torch.tensor([[1.0, 3.0], [2.0, 2.0]])       # ā = [[.25, .75], [.5, .5]]
    loss = smoothness(p, nb, kernel)
    want_value = (0.25 * 0.02 + 0.75 * 0.32 + 0.5 * 0.0 + 0.5 * 0.08) / 2
    assert float(loss.detach()) == pytest.approx(want_value)
    loss.backward()
    # 2 Σ_j ā_ij (p_i − p_j) / B
    want = torch.tensor([[2 * (0.25 * 0.1 + 0.75 * -0.4) / 2,
                          2 * (0.25 * -0.1 + 0.75 * 0.4) / 2],
                         [2 * (0.5 * 0.2) / 2, 2 * (0.5 * -0.2) / 2]])
    assert torch.allclose(p.grad, want, atol=1e-6)
    assert nb.grad is None                               # the neighbours are constants


# ---- 10. state ------------------------------------------------------------------------------
def trained_one_step(*overrides):
    m, ctx, model = tiny_ldlva(*overrides)
    opts = [s.optimizer for s in m.configure_optimizers(model, ctx)]
    m.on_epoch_start(model, ctx, 0)
    m.training_step(model, kit_batch(m, ctx, torch.arange(16)), ctx).backward()
    for o in opts:
        o.step()
    return m, ctx, model


def states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_state_survives_a_save_and_load_into_a_fresh_instance_built_or_not():
    m, ctx, _ = trained_one_step()
    state = m.state_dict()
    assert {"theta", "centres", "targets", "p_mem", "f_mem", "mem_ready", "graphs"} <= set(state)
    assert not torch.equal(state["theta"], torch.full_like(state["theta"], 0.5))
    assert state["centres"].abs().sum() > 0
    buf = io.BytesIO()
    torch.save(state, buf)

    buf.seek(0)
    unbuilt = LDLVA(m.config)
    unbuilt.load_state_dict(torch.load(buf, weights_only=False))
    states_equal(unbuilt.state_dict(), state)

    buf.seek(0)
    built = LDLVA(m.config)
    model = build_model(built, ctx)
    lam_opt = built.configure_optimizers(model, ctx)[1].optimizer
    built.load_state_dict(torch.load(buf, weights_only=False))
    states_equal(built.state_dict(), state)
    # restored in place: the λ optimiser made before the load steps the restored θ
    assert lam_opt.param_groups[0]["params"][0] is built.theta
    assert built.theta.requires_grad


def test_a_state_from_another_neighbour_graph_is_refused():
    m, ctx, _ = trained_one_step()
    state = m.state_dict()
    other = LDLVA(tiny_context("ldlva", ["image_size=32", "k=2"], data_options=SMALL)[0].config)
    build_model(other, ctx)
    with pytest.raises(ConfigError, match="neighbour graph differs"):
        other.load_state_dict(state)


# ---- 11. resume through the runner ----------------------------------------------------------
def run_ldlva(out, pass_, resume=False):
    from ferbench.runner import RunRequest, run

    return run(RunRequest(
        methods=["ldlva"], protocols=["noise30"], data_options=SMALL,
        flags={"epochs": 3, "batch_size": 16, "device": "cpu", "precision": "fp32"},
        overrides=[*TINY_KEYS, f"neighbour_pass={pass_}", "scheduler=step"], out=str(out),
        resume=resume, leaderboard=False, show_progress=False))


@pytest.mark.parametrize("pass_", ["cache", "forward"])
def test_an_interrupted_run_resumes_to_the_same_lambdas_and_centres(pass_, tmp_path,
                                                                      monkeypatch):
    final_states = []
    extra_results = LDLVA.extra_results

    def recording(self):
        final_states.append({k: v.clone() if torch.is_tensor(v) else v
                             for k, v in self.state_dict().items()})
        return extra_results(self)

    monkeypatch.setattr(LDLVA, "extra_results", recording)
    full = run_ldlva(tmp_path / "full", pass_)[0]

    on_epoch_start = LDLVA.on_epoch_start

    def stop_after_the_first_epoch(self, model, ctx, epoch):
        if epoch == 1:
            raise KeyboardInterrupt("stopped after epoch 1")
        return on_epoch_start(self, model, ctx, epoch)

    with monkeypatch.context() as mp:
        mp.setattr(LDLVA, "on_epoch_start", stop_after_the_first_epoch)
        with pytest.raises(KeyboardInterrupt):
            run_ldlva(tmp_path / "resumed", pass_)
    assert list((tmp_path / "resumed").rglob("checkpoint.pt"))
    resumed = run_ldlva(tmp_path / "resumed", pass_, resume=True)[0]

    a, b = json.loads(full.read_text()), json.loads(resumed.read_text())
    assert b["resumed_from_epoch"] == 1 and a["resumed_from_epoch"] in (None, 0)
    timing = {"train_images_per_s"}
    assert {k: v for k, v in a["metrics"].items() if k not in timing} == \
        {k: v for k, v in b["metrics"].items() if k not in timing}
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    arr_a, arr_b = np.load(full.with_suffix(".npz")), np.load(resumed.with_suffix(".npz"))
    assert arr_a["method_lambda"].shape == (3, SMALL["n_train"])
    assert np.array_equal(arr_a["method_lambda"], arr_b["method_lambda"])
    assert np.array_equal(arr_a["test_probs"], arr_b["test_probs"])
    assert len(final_states) == 2
    for key in ("theta", "centres", "targets", "p_mem", "f_mem"):
        assert torch.equal(final_states[0][key], final_states[1][key]), key


# ---- 12. the contract -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("pass_", ["cache", "forward"])
def test_ldlva_meets_the_contract(pass_, tmp_path):
    from ferbench.testing import check_method

    report = check_method("ldlva", steps=10, workdir=tmp_path,
                          overrides=["image_size=32", "k=2", f"neighbour_pass={pass_}"])
    assert report["loss_last"] < report["loss_first"]
    assert report["resumed"]


@pytest.mark.slow
def test_ldl_alsg_meets_the_contract_with_two_spaces(tmp_path):
    from ferbench.testing import check_method

    report = check_method("ldl-alsg", steps=10, workdir=tmp_path,
                          overrides=["image_size=32", "k=2", "aux_spaces=[landmarks,lbp]",
                                     "space_weights=[1.0,0.5]"])
    assert report["loss_last"] < report["loss_first"]
    record = json.loads(Path(report["results"][0]).read_text())
    assert [s["space"] for s in record["method_results"]["spaces"]] == ["landmarks", "lbp"]
