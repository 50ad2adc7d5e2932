"""The feature-diversity term on hand-made branch embeddings: which way each form pushes, for
the branch counts the methods use."""

from __future__ import annotations

import math

import pytest
import torch
from ferbench_diversified.diversity import (diversity_penalty, kernel_matrix,
                                            odd_branch_warning, similarity,
                                            SIMILARITY_BANDWIDTH)

GAMMA = 10.0


def simplex(n: int, s: float, batch: int = 3) -> list[torch.Tensor]:
    """n branches whose pairwise kernel values all equal s: scaled orthonormal vectors r·e_i,
    so ‖x_i − x_j‖² = 2r² and exp(−γ·2r²) = s."""
    r = math.sqrt(-math.log(s) / (2 * GAMMA))
    eye = torch.eye(n, n + 1)
    return [(r * eye[i]).expand(batch, -1).clone() for i in range(n)]


def identical(n: int, batch: int = 3) -> list[torch.Tensor]:
    x = torch.randn(batch, n + 1)
    return [x.clone() for _ in range(n)]


def test_the_kernel_is_the_batch_mean_of_the_gaussian_of_squared_distances():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 0.1], [0.0, 0.0]])
    s = kernel_matrix([a, b], GAMMA)
    want = (math.exp(-GAMMA * 0.01) + math.exp(-GAMMA * 1.0)) / 2
    assert s[0, 1].item() == pytest.approx(want) and s[1, 0].item() == pytest.approx(want)
    assert torch.equal(torch.diagonal(s), torch.ones(2))


def test_simplex_branches_have_the_kernel_value_asked_for():
    s = kernel_matrix(simplex(4, 0.3), GAMMA)
    off = s[~torch.eye(4, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, 0.3))


@pytest.mark.parametrize("form", ["logdet_unit", "det_unit"])
@pytest.mark.parametrize("n", [2, 3, 4, 9])
def test_unit_diagonal_forms_punish_alike_branches_most_and_orthogonal_ones_least(form, n):
    same = diversity_penalty(identical(n), form, GAMMA).item()
    apart = diversity_penalty(simplex(n, 1e-6), form, GAMMA).item()
    between = [diversity_penalty(simplex(n, s), form, GAMMA).item() for s in (0.2, 0.5, 0.8)]
    assert apart < between[0] < between[1] < between[2] < same


@pytest.mark.parametrize("n", [2, 3, 4, 9])
def test_det_unit_follows_its_closed_form(n):
    s = 0.4
    want = -((1 - s) ** (n - 1)) * (1 + (n - 1) * s)
    assert diversity_penalty(simplex(n, s), "det_unit", GAMMA).item() == pytest.approx(
        want, rel=1e-4)


@pytest.mark.parametrize("n, pushes_apart", [(2, True), (3, False), (4, True), (9, False)])
def test_the_codes_zero_diagonal_form_flips_sign_with_the_branch_count(n, pushes_apart):
    """−det S = (−1)^N (N − 1) s^N: rising in s for even N (minimising separates), falling for
    odd N (minimising pulls the branches together)."""
    for s in (0.3, 0.6):
        want = (-1) ** n * (n - 1) * s ** n
        got = diversity_penalty(simplex(n, s), "det_zero_diag", GAMMA).item()
        assert got == pytest.approx(want, rel=1e-3, abs=1e-9)
    low, high = (diversity_penalty(simplex(n, s), "det_zero_diag", GAMMA).item()
                 for s in (0.3, 0.6))
    assert (high > low) == pushes_apart


@pytest.mark.parametrize("form, n, apart", [("det_zero_diag", 9, False),
                                            ("det_zero_diag", 4, True),
                                            ("logdet_unit", 9, True), ("det_unit", 9, True)])
def test_a_gradient_step_on_the_term_moves_the_branches_the_way_its_form_says(form, n, apart):
    xs = [x.requires_grad_() for x in simplex(n, 0.5, batch=1)]
    diversity_penalty(xs, form, GAMMA).backward()
    with torch.no_grad():
        moved = [x - 1e-2 * x.grad / max(float(x.grad.abs().max()), 1e-12) for x in xs]
    before = kernel_matrix(simplex(n, 0.5, batch=1), GAMMA)[0, 1].item()
    after = kernel_matrix(moved, GAMMA)[0, 1].item()
    assert (after < before) == apart


def test_the_gradient_reaches_every_branch():
    xs = [torch.randn(4, 6, requires_grad=True) * 0.1 for _ in range(5)]
    xs = [x.detach().requires_grad_() for x in xs]
    diversity_penalty(xs, "logdet_unit", GAMMA).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in xs)


def test_on_raw_features_the_kernel_saturates_and_normalising_brings_it_back():
    torch.manual_seed(0)
    xs = [torch.randn(8, 512) for _ in range(4)]
    raw = kernel_matrix(xs, GAMMA, "none")
    assert raw[0, 1].item() == 0.0
    assert kernel_matrix(xs, GAMMA, "dim")[0, 1].item() > 1e-12
    assert kernel_matrix(xs, 1.0, "l2")[0, 1].item() > 0.05


def test_only_the_codes_form_on_an_odd_branch_count_warns():
    assert "TOGETHER" in odd_branch_warning("det_zero_diag", 9)
    assert odd_branch_warning("det_zero_diag", 4) is None
    assert odd_branch_warning("logdet_unit", 9) is None


def test_the_reported_similarity_is_cosine_and_the_l2_kernel_whatever_the_scale():
    same = similarity(identical(3))
    assert same["cosine"] == pytest.approx(1.0) and same["kernel_l2"] == pytest.approx(1.0)
    apart = similarity([x * 100 for x in simplex(3, 0.5)])
    assert apart["cosine"] == pytest.approx(0.0, abs=1e-6)
    # unit vectors at cosine 0 are d² = 2 apart, under the fixed measure's bandwidth
    assert apart["kernel_l2"] == pytest.approx(math.exp(-SIMILARITY_BANDWIDTH * 2), rel=1e-4)
