"""ESR with CBAM as the diversified code lays it out: shapes at the paper's 96 px and at a
small padded size, the 54 px floor of the unpadded layout, timm names, gradients."""

from __future__ import annotations

import pytest
import timm
import torch
from diversified_fixtures import one_thread  # noqa: F401  (autouse)
from ferbench_diversified import esr  # noqa: F401  (registers the timm names)
from ferbench_diversified.diversity import diversity_penalty
from ferbench_diversified.esr import ESR


def test_at_96_px_the_last_cbam_sees_6_by_6_maps_and_512_channels():
    net = ESR(num_classes=8, n_branches=2).eval()
    with torch.no_grad():
        out = net.forward_branches(torch.rand(2, 3, 96, 96))
    assert out["logits"].shape == (2, 2, 8)
    assert out["features"].shape == (2, 2, 512) and out["attn_ch"].shape == (2, 2, 512)
    assert out["attn_sp"].shape == (2, 2, 6, 6)


def test_the_unpadded_layout_refuses_faces_under_54_px_and_padding_takes_them():
    net = ESR(num_classes=7, n_branches=1, width_mult=0.25)
    with pytest.raises(ValueError, match="54 px"):
        net(torch.rand(1, 3, 48, 48))
    assert net(torch.rand(2, 3, 54, 54)).shape == (2, 7)
    small = ESR(num_classes=7, n_branches=3, width_mult=0.25, padded=True).eval()
    with torch.no_grad():
        out = small.forward_branches(torch.rand(2, 3, 48, 48))
    assert out["logits"].shape == (2, 3, 7) and out["attn_sp"].shape == (2, 3, 6, 6)


def test_timm_builds_both_sizes_by_name_and_forward_is_the_branch_mean():
    full = timm.create_model("ferbench_esr", num_classes=7, n_branches=2)
    quarter = timm.create_model("ferbench_esr_quarter", num_classes=7, padded=True)
    assert len(full.branches) == 2 and len(quarter.branches) == 9
    pair = timm.create_model("ferbench_esr_quarter", num_classes=7, n_branches=2)
    assert sum(p.numel() for p in pair.parameters()) < sum(
        p.numel() for p in full.parameters()) / 8
    quarter.eval()
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(quarter(x), quarter.forward_branches(x)["logits"].mean(1))


def test_only_the_active_branches_run():
    net = ESR(num_classes=7, n_branches=4, width_mult=0.25, padded=True)
    net.active = 2
    assert net.forward_branches(torch.rand(1, 3, 32, 32))["logits"].shape == (1, 2, 7)


def test_cross_entropy_and_the_diversity_term_reach_every_branch_and_the_base():
    torch.manual_seed(0)
    net = ESR(num_classes=7, n_branches=3, width_mult=0.25, padded=True)
    out = net.forward_branches(torch.rand(4, 3, 32, 32))
    y = torch.randint(0, 7, (4,))
    ce = sum(torch.nn.functional.cross_entropy(out["logits"][:, i], y) for i in range(3))
    div = diversity_penalty(out["attn_sp"].unbind(1), "logdet_unit", 10.0, "l2") + \
        diversity_penalty(out["attn_ch"].unbind(1), "logdet_unit", 10.0, "l2")
    (ce + div).backward()
    for i, b in enumerate(net.branches):
        assert b.fc.weight.grad.abs().sum() > 0, i
        assert b.units[-1].cbam.SpatialGate.spatial.conv.weight.grad.abs().sum() > 0, i
    assert net.base.units[0].conv.weight.grad.abs().sum() > 0


def test_without_cbam_it_is_the_original_esr_and_the_term_sees_the_last_maps_means():
    net = ESR(num_classes=7, n_branches=2, width_mult=0.25, padded=True, cbam=False).eval()
    assert not any(type(m).__name__ == "CBAM" for m in net.modules())
    with torch.no_grad():
        out = net.forward_branches(torch.rand(3, 3, 48, 48))
    assert out["attn_sp"].shape == (3, 2, 6, 6)
    assert torch.allclose(out["attn_ch"], out["features"])


def test_at_224_px_the_unpadded_layout_ends_in_22_by_22_maps():
    net = ESR(num_classes=7, n_branches=2, width_mult=0.25).eval()
    with torch.no_grad():
        out = net.forward_branches(torch.rand(1, 3, 224, 224))
    assert out["logits"].shape == (1, 2, 7) and out["attn_sp"].shape == (1, 2, 22, 22)
