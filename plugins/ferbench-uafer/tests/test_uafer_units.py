"""UA-FER's parts on hand-made numbers: the Dirichlet reading of scores and its losses, the
global and local relation scores, distillation, and the code's optimiser."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ferbench_uafer.evidential import (annealing, dirichlet, evidential_loss, kl_term,
                                       kl_to_uniform)
from ferbench_uafer.optim import freeze_first_layers, layer_groups, layer_id, warmup_cosine
from ferbench_uafer.relation import distillation, relation_scores, top_patches

from uafer_fixtures import TEST_ARCH, clip_files, isolated_cache, one_thread  # noqa: F401


# ---- 1. evidence, Dirichlet, uncertainty ----------------------------------------------------
def test_zero_evidence_means_full_uncertainty_and_a_uniform_prediction():
    alpha, s, p, u = dirichlet(torch.tensor([[-0.3, -1.0, 0.0, -0.2]]), "relu")
    assert torch.equal(alpha, torch.ones(1, 4))
    assert u.item() == 1.0 and s.item() == 4.0
    torch.testing.assert_close(p, torch.full((1, 4), 0.25))


def test_relu_evidence_on_hand_numbers():
    alpha, s, p, u = dirichlet(torch.tensor([[2.0, 0.0, -1.0]]), "relu")
    torch.testing.assert_close(alpha, torch.tensor([[3.0, 1.0, 1.0]]))
    torch.testing.assert_close(p, torch.tensor([[0.6, 0.2, 0.2]]))
    assert u.item() == pytest.approx(3 / 5)


@pytest.mark.parametrize("evidence", ["relu", "softplus", "exp"])
def test_probabilities_sum_to_one_and_uncertainty_lies_in_0_1(evidence):
    z = torch.randn(64, 7) * 5
    _, _, p, u = dirichlet(z, evidence)
    torch.testing.assert_close(p.sum(1), torch.ones(64))
    assert (u > 0).all() and (u <= 1).all()


def test_the_codes_scores_bound_u_between_c_over_c_plus_root_c_and_one():
    """z mixes two unit vectors across classes (norm <= 1), so Σ ReLU(z) <= √C: S lies in
    [C, C + √C] and u = C/S in [C/(C + √C), 1], the flat all-positive vector at the bound."""
    torch.manual_seed(0)
    c = 7
    z = relation_scores(torch.randn(512, 16), torch.randn(512, 9, 16), torch.randn(c, 16),
                        topk=3, alpha=0.1)
    _, s, _, u = dirichlet(z, "relu")
    floor = c / (c + math.sqrt(c))
    assert u.min() >= floor - 1e-6 and u.max() <= 1.0 and s.max() <= c + math.sqrt(c) + 1e-5
    flat = torch.full((1, c), 1 / math.sqrt(c))
    assert dirichlet(flat, "relu")[3].item() == pytest.approx(floor)
    assert dirichlet(F.one_hot(torch.tensor([2]), c).float(), "relu")[3].item() == \
        pytest.approx(c / (c + 1))


def test_scores_are_computed_in_fp32_under_a_bf16_autocast():
    torch.manual_seed(0)
    g, p, t = torch.randn(4, 16), torch.randn(4, 9, 16), torch.randn(7, 16)
    want = relation_scores(g, p, t, topk=3, alpha=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = relation_scores(g, p, t, topk=3, alpha=0.1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)


def test_exp_evidence_is_clamped_so_huge_scores_stay_finite():
    alpha, _, p, _ = dirichlet(torch.tensor([[1e4, 0.0]]), "exp")
    assert torch.isfinite(alpha).all() and alpha[0, 0] == pytest.approx(math.exp(10) + 1)


# ---- 2. the losses ---------------------------------------------------------------------------
Y = torch.tensor([[1.0, 0.0, 0.0]])
A = torch.tensor([[3.0, 1.0, 1.0]])   # S = 5, p = (.6, .2, .2)


def test_the_codes_loss_is_the_error_part_of_the_mse_form_only():
    assert evidential_loss(A, Y, "mse_err").item() == pytest.approx(0.4 ** 2 + 2 * 0.2 ** 2)


def test_the_mse_form_adds_the_dirichlet_variance():
    var = (3 * 2 + 1 * 4 + 1 * 4) / (25 * 6)
    assert evidential_loss(A, Y, "mse").item() == pytest.approx(0.24 + var)


def test_the_digamma_form_is_the_expected_cross_entropy():
    # ψ(5) − ψ(3) = 1/3 + 1/4
    assert evidential_loss(A, Y, "digamma").item() == pytest.approx(1 / 3 + 1 / 4, rel=1e-5)


def test_the_codes_loss_is_lowest_at_a_one_hot_score_and_stays_above_0_65():
    """With evidence <= 1 the best the code's loss can do for K = 7 is 0.65625 (all of the
    score on the label): no unit-norm score vector does better."""
    y = F.one_hot(torch.tensor([0]), 7).float()
    best = evidential_loss(dirichlet(F.one_hot(torch.tensor([0]), 7).float())[0], y,
                           "mse_err").item()
    assert best == pytest.approx((1 - 2 / 8) ** 2 + 6 * (1 / 8) ** 2)
    torch.manual_seed(0)
    z = F.normalize(torch.randn(4096, 7), dim=1)
    others = evidential_loss(dirichlet(z)[0], y.expand(4096, -1), "mse_err")
    assert others.min().item() >= best - 1e-6


def test_a_face_whose_scores_are_all_negative_gets_no_gradient_from_the_codes_loss():
    """ReLU evidence: once every class score of a face is below 0 (random towers, where
    image-text cosines take either sign) its loss is stuck at (K-1)/K; softplus still moves."""
    y = F.one_hot(torch.tensor([1]), 7).float()
    for evidence, stuck in (("relu", True), ("softplus", False)):
        z = (-torch.rand(1, 7)).requires_grad_()
        alpha, _, _, _ = dirichlet(z, evidence)
        loss = evidential_loss(alpha, y, "mse_err").sum()
        loss.backward()
        assert (z.grad.abs().max().item() == 0) == stuck, evidence
        if stuck:
            assert loss.item() == pytest.approx(6 / 7)


def test_kl_to_uniform_matches_torch_distributions():
    alpha = torch.tensor([[3.0, 1.0, 1.0], [1.5, 2.5, 4.0]])
    want = torch.distributions.kl_divergence(torch.distributions.Dirichlet(alpha),
                                             torch.distributions.Dirichlet(torch.ones(2, 3)))
    torch.testing.assert_close(kl_to_uniform(alpha), want)
    torch.testing.assert_close(kl_to_uniform(torch.ones(1, 3)), torch.zeros(1))


def test_the_kl_term_ignores_evidence_for_the_target_and_punishes_the_rest():
    assert kl_term(torch.tensor([[9.0, 1.0, 1.0]]), Y).item() == pytest.approx(0, abs=1e-6)
    assert kl_term(torch.tensor([[1.0, 9.0, 1.0]]), Y).item() > 0.5


def test_kl_annealing_rises_linearly_to_one_over_its_epochs():
    assert [annealing(e, 10) for e in (0, 5, 10, 30)] == [0.0, 0.5, 1.0, 1.0]
    assert annealing(3, 0) == 1.0


# ---- 3. relation scores ----------------------------------------------------------------------
def _hand_case():
    """Two classes along e0 and e1; patches 0-1 point at class 0, patches 2-4 at class 1."""
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    patches = torch.tensor([[[1.0, 0.1, 0.0], [0.9, 0.0, 0.3], [0.0, 1.0, 0.0],
                             [0.1, 1.0, 0.2], [0.0, 0.8, 0.6]]])
    return text, patches


def test_each_class_chooses_its_own_top_k_patches():
    text, patches = _hand_case()
    idx = top_patches(patches, text, 2).indices
    assert set(idx[0, :, 0].tolist()) == {0, 1}
    assert set(idx[0, :, 1].tolist()) == {2, 3}


def test_local_score_is_the_mean_of_each_classes_top_k_affinities_normalised():
    text, patches = _hand_case()
    aff = F.normalize(patches, dim=-1) @ text.t()        # [1, 5, 2]
    local = torch.stack([aff[0, [0, 1], 0].mean(), aff[0, [2, 3], 1].mean()])
    got = relation_scores(torch.ones(1, 3), patches, text, topk=2, alpha=1.0)
    torch.testing.assert_close(got[0], F.normalize(local, dim=0))


def test_global_score_is_the_class_tokens_cosine_normalised_across_classes():
    text, patches = _hand_case()
    g = torch.tensor([[3.0, 1.0, 0.0]])
    got = relation_scores(g, patches, text, topk=2, alpha=0.0)
    torch.testing.assert_close(got, F.normalize(F.normalize(g, dim=-1) @ text.t(), dim=-1))


def test_alpha_mixes_the_two_scores():
    text, patches = _hand_case()
    g = torch.tensor([[3.0, 1.0, 0.0]])
    loc = relation_scores(g, patches, text, 2, 1.0)
    glb = relation_scores(g, patches, text, 2, 0.0)
    torch.testing.assert_close(relation_scores(g, patches, text, 2, 0.1),
                               0.1 * loc + 0.9 * glb)


def test_unnormalised_text_rescales_each_class_as_the_codes_test_pass_does():
    text, patches = _hand_case()
    g = torch.tensor([[1.0, 1.0, 0.0]])
    fixed = relation_scores(g, patches, text, 2, 0.0)
    torch.testing.assert_close(relation_scores(g, patches, text * 5, 2, 0.0), fixed)
    skewed = relation_scores(g, patches, text * torch.tensor([[1.0], [4.0]]), 2, 0.0,
                             normalise_text=False)
    assert skewed[0, 1] > skewed[0, 0] and not torch.allclose(skewed, fixed)


# ---- 4. distillation -----------------------------------------------------------------------
def test_distillation_pulls_the_normalised_student_to_the_raw_teacher():
    g, h = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 1.0]])
    assert distillation(g, h).item() == pytest.approx((0.4 + 0.2) / 2)
    r = 1 / math.sqrt(2)
    assert distillation(g, h, normalise_teacher=True).item() == pytest.approx(
        (abs(0.6 - r) + abs(0.8 - r)) / 2)


# ---- 5. the code's optimiser -----------------------------------------------------------------
@pytest.fixture
def tower(clip_files):
    import open_clip

    return open_clip.create_model(TEST_ARCH, pretrained=None).visual


def test_layer_ids_follow_the_code(tower):
    depth = len(tower.transformer.resblocks)
    ids = {n: layer_id(n, depth) for n, _ in tower.named_parameters()}
    assert ids["conv1.weight"] == ids["class_embedding"] == ids["positional_embedding"] == 0
    assert ids["ln_pre.weight"] == 0
    assert ids["transformer.resblocks.0.attn.in_proj_weight"] == 1
    assert ids["transformer.resblocks.1.mlp.c_fc.weight"] == 2
    assert ids["ln_post.weight"] == ids["proj"] == depth + 1


def test_fix_layer_freezes_the_embeddings_and_the_first_blocks_only(tower):
    frozen = freeze_first_layers(tower, 2, fix_layer=1)
    assert "conv1.weight" in frozen and "transformer.resblocks.0.attn.in_proj_weight" in frozen
    assert not any(n.startswith("transformer.resblocks.1") for n in frozen)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert "proj" in trainable and "transformer.resblocks.1.attn.in_proj_weight" in trainable
    assert trainable.isdisjoint(frozen)


def test_groups_decay_the_rate_per_layer_and_weight_decay_only_matrices(tower):
    freeze_first_layers(tower, 2, fix_layer=0)
    groups = layer_groups(tower, 2, weight_decay=5e-4, layer_decay=0.65)
    for g in groups:
        assert g["lr_scale"] == pytest.approx(0.65 ** (3 - g["layer_id"]))
        assert g["layer_id"] > 0
        for name, p in zip(g["names"], g["params"]):
            assert g["weight_decay"] == (5e-4 if p.ndim >= 2 else 0.0), name
    assert groups[0]["layer_id"] == 3  # the engine logs the first group's rate
    top = [g for g in groups if g["layer_id"] == 3]
    assert {n for g in top for n in g["names"]} == {"ln_post.weight", "ln_post.bias", "proj"}
    n_trainable = sum(1 for p in tower.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in groups) == n_trainable


def test_the_schedule_warms_up_linearly_then_falls_as_a_half_cosine():
    lr, lo = 1e-4, 1e-8
    assert warmup_cosine(0.0, 5, 50, lr, lo) == 0.0
    assert warmup_cosine(2.5, 5, 50, lr, lo) == pytest.approx(lr / 2)
    assert warmup_cosine(5.0, 5, 50, lr, lo) == pytest.approx(lr)
    assert warmup_cosine(27.5, 5, 50, lr, lo) == pytest.approx((lr + lo) / 2)
    assert warmup_cosine(50.0, 5, 50, lr, lo) == pytest.approx(lo)
