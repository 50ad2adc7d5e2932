"""ferbench's backbones, as any method builds them: by name through timm."""

from __future__ import annotations

import pytest
import timm
import torch

import ferbench.models  # noqa: F401  (registers the backbones with timm)


def test_resnet18_s1_keeps_a_48px_face_at_full_resolution_into_its_first_stage():
    model = timm.create_model("ferbench_resnet18_s1", num_classes=8, in_chans=1)
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))
    out = model(torch.rand(2, 1, 48, 48))
    assert out.shape == (2, 8)
    assert seen["layer1"] == (2, 64, 48, 48)  # the ImageNet stem would leave 12x12
    assert 11.0e6 < sum(p.numel() for p in model.parameters()) < 11.3e6
    # a classifier swap, as methods and weight loading do it
    model.reset_classifier(3)
    assert model(torch.rand(1, 1, 48, 48)).shape == (1, 3)


@pytest.mark.parametrize("name", ["ferbench_resnet_tiny", "ferbench_resnet_small",
                                  "ferbench_resnet_base"])
def test_each_face_resnet_size_classifies_48_and_112px_faces_grey_or_colour(name):
    model = timm.create_model(name, num_classes=8)
    for size in (48, 112):
        assert model(torch.rand(2, 3, size, size)).shape == (2, 8)
    grey = timm.create_model(name, num_classes=7, in_chans=1)
    assert grey(torch.rand(2, 1, 48, 48)).shape == (2, 7)


def test_the_face_resnet_sizes_grow_in_parameters_and_cost():
    from torch.utils.flop_counter import FlopCounterMode

    costs = []
    for name in ("ferbench_resnet_tiny", "ferbench_resnet_small", "ferbench_resnet_base"):
        model = timm.create_model(name, num_classes=8)
        with FlopCounterMode(display=False) as counter:
            model(torch.rand(1, 3, 48, 48))
        costs.append((sum(p.numel() for p in model.parameters()), counter.get_total_flops()))
    assert costs == sorted(costs) and len({c[0] for c in costs}) == 3
    # base: ResNet-18's widths at a quarter of ferbench_resnet18_s1's 1.25 G multiply-adds
    assert 0.25e9 < costs[-1][1] / 2 < 0.35e9
