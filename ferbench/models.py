"""Backbones ferbench registers with timm, so every method builds them by name."""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + (x if self.short is None else self.short(x)))


class FaceResNet(nn.Module):
    """A small ResNet for 48-112 px faces: a narrow 3x3 stem at full resolution.

    ImageNet ResNets downsample 4x in the stem, leaving a 48 px face 12 px wide
    before the first block; FER networks keep the stem at stride 1 instead.
    Here the stem keeps full resolution but is narrow (cheap), the first stage
    halves it, and inputs above 64 px are average-pooled 2x first, so the cost
    at 112 px stays close to the cost at 56 px.
    """

    def __init__(self, widths=(32, 64, 128, 256), depths=(1, 1, 1, 1), stem_width=16,
                 first_stride=2, num_classes=1000, in_chans=3, drop_rate=0.0, **_):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
        stages, cin = [], stem_width
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [_Block(cin, w, first_stride if i == 0 else 2)]
            blocks += [_Block(w, w, 1) for _ in range(d - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = {"classifier": "fc"}

    def forward_features(self, x):
        if x.shape[-1] > 64:
            x = nn.functional.avg_pool2d(x, 2)
        return self.stages(self.stem(x))

    def forward_head(self, x, pre_logits: bool = False):
        x = self.drop(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes: int, **_):
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model
def ferbench_resnet_tiny(pretrained=False, **kwargs):
    """About 0.7 M parameters, ~50 MFLOPs at 48 px: the `quick` preset's backbone."""
    return FaceResNet(widths=(24, 48, 96, 192), depths=(1, 1, 1, 1), **kwargs)


@register_model
def ferbench_resnet_small(pretrained=False, **kwargs):
    """Twice the tiny network's width in the last stages, a second block in the third."""
    return FaceResNet(widths=(32, 64, 160, 320), depths=(1, 1, 2, 1), stem_width=24, **kwargs)


@register_model
def ferbench_resnet_base(pretrained=False, **kwargs):
    """ResNet-18's widths and depths behind the narrow full-resolution stem."""
    return FaceResNet(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), stem_width=32, **kwargs)


@register_model
def ferbench_resnet18_s1(pretrained=False, **kwargs):
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool: the usual FER variant for 48 px
    faces (11.2 M parameters, 1.25 G multiply-adds at 48 px): the reference fast recipes beat."""
    from timm.models.resnet import BasicBlock, ResNet

    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)
    model.conv1 = nn.Conv2d(kwargs.get("in_chans", 3), 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model
