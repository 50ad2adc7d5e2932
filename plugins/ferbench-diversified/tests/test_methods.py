"""The four methods as a user meets them: the contract, the incremental schedule with its
best-ensemble reloads, resumption, the authors' MA-Net checkpoint, noise scores, the
diversity figures in the result and the leaderboard, and clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from ferbench import ConfigError, DataError
from ferbench.progress import console
from ferbench.testing import build_model, check_method, tiny_context
from ferbench_diversified.esr_method import ESRDiv
from ferbench_diversified.manet import MANet

ESR_SMALL = ["method.n_branches=2"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERBENCH_CACHE", str(tmp_path / "cache"))


# ---- the contract ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,overrides,data", [
    ("esr", ESR_SMALL, None),
    ("esr-div", ESR_SMALL, {"n_val": 32}),        # with validation: the best-ensemble reloads
    ("manet", [], None),
    ("manet-div", [], {"n_val": 32}),
])
def test_all_four_methods_meet_the_contract(name, overrides, data, tmp_path):
    report = check_method(name, overrides=overrides, workdir=tmp_path, data_options=data)
    assert report["loss_last"] < report["loss_first"]
    if name.startswith("esr"):  # a phase per branch, each boundary resumed to the same end
        assert "after the end of phase 0" in report["resumed"]


# ---- the incremental schedule --------------------------------------------------------------
def test_incremental_training_has_one_phase_per_branch_in_the_codes_proportions():
    m, ctx = tiny_context("esr-div", ["method.n_branches=9", "method.first_phase_share=2.5"],
                          epochs=210)
    phases = m.phases(ctx)
    assert [p.name for p in phases] == [f"branch{i}" for i in range(1, 10)]
    assert [p.epochs for p in phases] == [50] + [20] * 8
    joint, ctx = tiny_context("esr-div", ["method.training=joint"], epochs=4)
    assert joint.phases(ctx) is None


def test_each_phase_adds_one_branch_with_its_own_rate_and_the_old_ones_slower():
    m, ctx = tiny_context("esr", ["method.n_branches=3", "method.lr=0.1", "method.lr_old=0.01",
                                  "method.optimizer=sgd", "method.scheduler=step"], epochs=3)
    model = build_model(m, ctx)
    for k, phase in enumerate(m.phases(ctx)):
        ctx.phase = phase
        m.on_phase_start(model, ctx, phase)
        assert model.active == k + 1
        groups = m.configure_optimizers(model, ctx)[0].optimizer.param_groups
        new = {id(p) for p in model.branches[k].parameters()}
        rate = {id(p): g["lr"] for g in groups for p in g["params"]}
        assert all(rate[i] == 0.1 for i in new)
        base = [rate[id(p)] for p in model.base.parameters()]
        assert set(base) == {0.1 if k == 0 else 0.01}
        for old in range(k):
            assert {rate[id(p)] for p in model.branches[old].parameters()} == {0.01}
        later = {id(p) for b in model.branches[k + 1:] for p in b.parameters()}
        assert not later & set(rate), "a branch is trained before its phase"
        with torch.no_grad():
            assert m.predict(model, torch.rand(2, 3, 48, 48)).members.shape == (2, k + 1, 7)


def test_the_best_ensemble_on_validation_is_reloaded_at_the_end_of_a_phase():
    m, ctx = tiny_context("esr-div", ESR_SMALL, epochs=2, data_options={"n_val": 16})
    model = build_model(m, ctx)
    phase = m.phases(ctx)[0]
    ctx.phase = phase
    m.on_phase_start(model, ctx, phase)
    m.on_validation_end(model, ctx, 0, {"val_acc": 0.5})
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    m.on_validation_end(model, ctx, 1, {"val_acc": 0.4})    # worse: not kept
    m.on_phase_end(model, ctx, phase)
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    assert m.extra_results()["phases"] == [{"phase": "branch1", "epochs": phase.epochs,
                                            "best_epoch": 0, "best_val_acc": 0.5}]


def test_a_phased_run_with_validation_records_each_phases_best_and_scores_every_branch(tmp_path):
    res = run_tiny(tmp_path, "esr-div", ["n_branches=3", "training=incremental"],
                   data={"n_val": 24}, epochs=3)
    phases = res["method_results"]["phases"]
    assert [p["phase"] for p in phases] == ["branch1", "branch2", "branch3"]
    assert all("best_epoch" in p for p in phases)
    assert len(res["members"]["acc"]) == 3


# ---- the diversity figures ------------------------------------------------------------------
def test_predictions_carry_the_fixed_similarity_and_every_terms_kernel():
    m, ctx = tiny_context("manet-div", [])
    model = build_model(m, ctx).eval()
    with torch.no_grad():
        pred = m.predict(model, torch.rand(5, 3, 48, 48))
    assert set(pred.extras) == {"sim_cosine", "sim_kernel_l2", "kernel_spatial",
                                "kernel_channel", "kernel_feature"}
    for v in pred.extras.values():
        assert v.shape == (5,) and bool(((v >= -1) & (v <= 1)).all())
    m, ctx = tiny_context("esr", ESR_SMALL)
    model = build_model(m, ctx).eval()
    with torch.no_grad():
        pred = m.predict(model, torch.rand(5, 3, 48, 48))
    assert set(pred.extras) == {"sim_cosine", "sim_kernel_l2", "kernel_spatial",
                                "kernel_channel"}


@pytest.mark.slow
def test_the_leaderboard_shows_the_four_methods_similarity_side_by_side(tmp_path):
    for name in ("esr", "esr-div", "manet", "manet-div"):
        run_tiny(tmp_path, name, ["n_branches=2"] if name.startswith("esr") else [],
                 epochs=2, leaderboard=name == "manet-div")
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    section = board[board.index("### Method figures"):]
    lines = section[:section.index("\n### ", 10)].splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    columns = [c.strip().replace("\\_", "_") for c in header.strip("|").split("|")]
    rows = {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")]
            for r in lines if r.startswith("| ") and not r.startswith("| method")}
    assert set(rows) == {"ESR", "ESR + diversity", "MA-Net", "MA-Net + diversity"}
    for figure in ("test_sim_cosine", "test_sim_kernel_l2", "test_kernel_spatial"):
        col = columns.index(figure)
        assert all(rows[m][col] not in ("", "–") for m in rows), (figure, rows)


# ---- noise scores ---------------------------------------------------------------------------
def test_noise_scores_are_one_minus_the_mean_branch_probability_of_the_given_label():
    m, ctx = tiny_context("esr", ESR_SMALL)
    model = build_model(m, ctx)
    scores = m.noise_scores(model, ctx)
    model.eval()
    with torch.no_grad():
        members = m.predict(model, ctx.train.images(torch.arange(len(ctx.train)))).members
    y = ctx.train.labels
    expected = 1 - members[torch.arange(len(y)), :, y].mean(1)
    assert scores.shape == (len(ctx.train),)
    assert torch.allclose(scores, expected, atol=1e-5)


# ---- MA-Net's checkpoints --------------------------------------------------------------------
def write_authors_checkpoint(path, classes=12):
    """The MA-Net authors' layout: {'state_dict': ...} of a DataParallel model, `module.`
    on every key, heads of another class count."""
    torch.manual_seed(3)
    net = MANet(num_classes=classes, width_mult=0.25)
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in
                                          net.state_dict().items()}}, path)
    return net.state_dict()


def test_the_authors_checkpoint_loads_as_it_is_with_new_heads(tmp_path):
    path = tmp_path / "Pretrained_on_MSCeleb.pth.tar"
    saved = write_authors_checkpoint(path)
    m, ctx = tiny_context("manet", [f"method.weights={path}"])
    model = build_model(m, ctx)
    own = model.state_dict()
    body = [k for k in saved if not k.startswith(("fc_1.", "fc_2."))]
    assert all(torch.equal(own[k], saved[k]) for k in body)
    assert own["fc_1.weight"].shape == (7, 128)


def test_a_plain_resnet18_initialises_every_layer_whose_name_and_shape_match(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_msceleb.pth"
    torch.save(resnet, path)
    m, ctx = tiny_context("manet", [f"method.weights={path}", "method.backbone=ferbench_manet"])
    model = build_model(m, ctx)
    own = model.state_dict()
    assert torch.equal(own["layer1.0.conv1.weight"], resnet["layer1.0.conv1.weight"])
    for branch in ("layer3_1_p1", "layer3_1_p4", "layer3_2"):
        assert torch.equal(own[f"{branch}.0.conv1.weight"], resnet["layer3.0.conv1.weight"])
    assert torch.equal(own["layer4_1_p3.1.conv2.weight"], resnet["layer4.1.conv2.weight"])
    assert torch.equal(own["layer4_2.0.conv1.weight"], resnet["layer4.0.conv1.weight"])


def test_an_authors_checkpoint_of_another_layout_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.pth.tar"
    state = MANet(num_classes=7, width_mult=0.25).state_dict()
    state = {f"module.{k}": v for k, v in state.items() if not k.startswith("layer4_1_p2.")}
    torch.save({"state_dict": state}, path)
    m, ctx = tiny_context("manet", [f"method.weights={path}"])
    with pytest.raises(DataError) as err:
        build_model(m, ctx)
    assert str(path) in str(err.value) and "layer4_1_p2" in str(err.value)



@pytest.mark.parametrize("damage,why", [("drop", "missing"), ("reshape", "wrong shape")])
def test_a_damaged_first_branch_of_an_authors_checkpoint_is_named_not_read_as_a_resnet(
        tmp_path, damage, why):
    path = tmp_path / "damaged.pth.tar"
    state = {f"module.{k}": v for k, v in MANet(num_classes=7, width_mult=0.25).state_dict().items()}
    key = "module.layer3_1_p1.0.conv1.weight"
    if damage == "drop":
        del state[key]
    else:
        state[key] = torch.zeros(3, 3, 1, 1)
    torch.save({"state_dict": state}, path)
    m, ctx = tiny_context("manet", [f"method.weights={path}"])
    with pytest.raises(DataError) as err:
        build_model(m, ctx)
    assert str(err.value).startswith(str(path))
    assert f"first: layer3_1_p1.0.conv1.weight, {why}" in str(err.value)

def test_the_result_records_what_the_authors_checkpoint_loaded(tmp_path):
    path = tmp_path / "manet.pth.tar"
    write_authors_checkpoint(path)
    res = run_tiny(tmp_path, "manet", [f"weights={path}"], epochs=1)
    entry = next(w for w in res["weights"] if w.get("module") == "manet")
    assert entry["file"] == str(path)
    assert sorted(entry["left_random"]) == ["fc_1.bias", "fc_1.weight", "fc_2.bias",
                                            "fc_2.weight"]


# ---- refusals and warnings ------------------------------------------------------------------
def test_esr_under_54_px_unpadded_is_refused_naming_the_way_out():
    with pytest.raises(ConfigError, match="padded=true"):
        tiny_context("esr", ["method.padded=false"])


@pytest.mark.parametrize("name,backbone,kind", [("manet", "resnet18", "MA-Net"),
                                                ("esr", "ferbench_manet_quarter", "ESR")])
def test_a_backbone_of_another_family_is_one_line_naming_it(name, backbone, kind):
    m, ctx = tiny_context(name, [f"method.backbone={backbone}"])
    with pytest.raises(ConfigError, match=f"{backbone}' is not {kind}"):
        build_model(m, ctx)


def test_fewer_epochs_than_branches_in_incremental_training_is_refused():
    with pytest.raises(ConfigError, match="training=joint"):
        tiny_context("esr", ["method.n_branches=4"], epochs=3)



def test_a_first_phase_of_no_share_is_refused_so_every_branch_keeps_its_phase():
    with pytest.raises(ConfigError, match="first_phase_share=0.0: must be above 0"):
        tiny_context("esr", ["method.n_branches=3", "method.first_phase_share=0"], epochs=3)

def test_the_codes_form_on_an_odd_number_of_branches_warns_at_build():
    m, ctx = tiny_context("esr-div", ["method.n_branches=3", "method.diversity_form=det_zero_diag"],
                          epochs=3)
    with console.capture() as cap:
        build_model(m, ctx)
    assert "pulls an odd number of branches TOGETHER" in cap.get()
    m, ctx = tiny_context("esr-div", ["method.n_branches=3"], epochs=3)
    with console.capture() as cap:
        build_model(m, ctx)
    assert "TOGETHER" not in cap.get()


def test_plain_methods_are_the_same_code_with_the_terms_weight_at_zero():
    from ferbench_diversified.esr_method import ESRPlain
    from ferbench_diversified.manet_method import MANetDiv, MANetPlain

    assert ESRPlain.Config().diversity_weight == 0 and ESRDiv.Config().diversity_weight == 1
    assert MANetPlain.Config().diversity_weight == 0 and MANetDiv.Config().diversity_weight == 1
    assert ESRPlain.__mro__[1] is ESRDiv.__mro__[1] and MANetPlain.__mro__[1] is MANetDiv.__mro__[1]


# ---- helpers ---------------------------------------------------------------------------------
def run_tiny(tmp_path, name, overrides, data=None, epochs=2, leaderboard=False):
    from ferbench.runner import RunRequest, run

    paths = run(RunRequest(methods=[name], protocols=["noise30"],
                           data_options={"n_train": 96, "n_test": 48, **(data or {})},
                           flags={"epochs": epochs, "batch_size": 16, "device": "cpu",
                                  "precision": "fp32"},
                           overrides=list(overrides), out=str(tmp_path / "out"),
                           leaderboard=leaderboard, show_progress=False))
    return json.loads(paths[-1].read_text())
