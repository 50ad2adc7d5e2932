"""ferbench's backbones, as any method builds them: by name through timm."""

from __future__ import annotations

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
