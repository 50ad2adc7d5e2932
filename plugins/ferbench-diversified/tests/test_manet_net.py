"""MA-Net as the official code lays it out: shapes at 224 px, 96 px and the quick size, the
module names the authors' checkpoint needs, timm names, gradients into every part."""

from __future__ import annotations

import pytest
import timm
import torch
from diversified_fixtures import one_thread  # noqa: F401  (autouse)
from ferbench_diversified import manet  # noqa: F401  (registers the timm names)
from ferbench_diversified.manet import PATCHES, MANet


@pytest.mark.parametrize("size,patch", [(224, 7), (96, 3), (48, 2)])
def test_the_four_quadrants_and_both_heads_have_the_codes_shapes(size, patch):
    net = MANet(num_classes=7, width_mult=1.0 if size == 224 else 0.25).eval()
    width = 512 if size == 224 else 128
    with torch.no_grad():
        out = net.forward_parts(torch.rand(2, 3, size, size))
    assert out["local"].shape == out["global_"].shape == (2, 7)
    assert out["patches"].shape == (2, 4, width, patch, patch)
    assert out["feat_local"].shape == out["feat_global"].shape == (2, width)


def test_the_prediction_is_beta_local_plus_the_rest_global():
    net = MANet(num_classes=5, width_mult=0.25, beta=0.6).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        out = net.forward_parts(x)
        assert torch.allclose(net(x), 0.6 * out["local"] + 0.4 * out["global_"], atol=1e-6)


def test_module_names_are_the_official_codes():
    names = set(MANet(num_classes=7).state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                "layer2.0.downsample.0.weight", "layer3_1_p1.0.cbam.ChannelGate.mlp.1.weight",
                "layer4_1_p4.1.cbam.SpatialGate.spatial.conv.weight",
                "layer4_1_p2.0.cbam.SpatialGate.spatial.bn.running_var",
                "layer3_2.0.conv1_2_1.weight", "layer4_2.1.bn2_2_4.bias", "fc_1.weight",
                "fc_2.bias"):
        assert key in names, key
    # the official model's tensor count: 4 local branches of attention blocks, one
    # multi-scale global branch, two heads
    assert len([k for k in names if k.startswith("layer3_1_p")]) == 4 * len(
        [k for k in names if k.startswith("layer3_1_p1.")])


def test_both_sizes_are_timm_models_any_method_can_name():
    full = timm.create_model("ferbench_manet", num_classes=8)
    quarter = timm.create_model("ferbench_manet_quarter", num_classes=8)
    assert isinstance(full, MANet) and quarter.num_features == 128
    assert sum(p.numel() for p in quarter.parameters()) < sum(p.numel() for p in full.parameters()) / 10


def test_gradients_reach_every_quadrant_branch_and_the_global_branch():
    net = MANet(num_classes=4, width_mult=0.25)
    out = net.forward_parts(torch.rand(2, 3, 48, 48))
    (out["local"].sum() + out["global_"].sum()).backward()
    for p in PATCHES:
        assert getattr(net, f"layer3_1_{p}")[0].conv1.weight.grad.abs().sum() > 0, p
    assert net.layer3_2[0].conv1_2_1.weight.grad.abs().sum() > 0


def test_faces_too_small_for_quadrants_are_one_clear_error():
    net = MANet(num_classes=4, width_mult=0.25)
    with pytest.raises(ValueError, match="32 px"):
        net(torch.rand(2, 3, 8, 8))
