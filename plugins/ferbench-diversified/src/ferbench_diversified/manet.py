"""MA-Net (Zhao, Liu, Wang, IEEE TIP 2021) as the diversified code has it.

Module names follow the official code (model/diversified_manet.py, itself the MA-Net
authors' model/manet.py), so the authors' MS-Celeb checkpoint loads as it is: a ResNet-18
stem with `layer1`, `layer2` shared; a local branch of four quadrants, each through its own
`layer3_1_pK` (stride 2) and `layer4_1_pK` (stride 1) of attention blocks (a basic block with
CBAM before the residual add), re-assembled, pooled and classified by one head `fc_1`; a global
branch `layer3_2` + `layer4_2` (stride 2) of multi-scale blocks, pooled, head `fc_2`. The
prediction is β·fc_1 + (1 − β)·fc_2 (β 0.6). The code cuts the 28×28 map at 14; here it is
cut at half its size, the same at 224 px. Registered with timm as `ferbench_manet` and
`ferbench_manet_quarter` (a quarter of every width: the CPU size).
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from .esr import CBAM


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def residual(self, out):
        return out

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.residual(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AttentionBlock(BasicBlock):
    """A basic block with CBAM (reduction 16) on the residual before the add."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__(inplanes, planes, stride, downsample)
        self.cbam = CBAM(planes, 16)

    def residual(self, out):
        return self.cbam(out)[0]


class MulScaleBlock(nn.Module):
    """A 3×3 conv, then its output split into four groups through two parallel Res2Net-style
    hierarchical paths (`conv1_2_*`, `conv2_2_*`), summed, then the residual add."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        w = planes // 4
        self.scale_width = w
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        for path in (1, 2):
            for g in range(1, 5):
                setattr(self, f"conv{path}_2_{g}", conv3x3(w, w))
                setattr(self, f"bn{path}_2_{g}", nn.BatchNorm2d(w))
        self.downsample = downsample

    def _path(self, path, parts):
        outs, prev = [], None
        for g in range(1, 5):
            x = parts[g - 1] if prev is None else self.relu(prev) + parts[g - 1]
            prev = getattr(self, f"bn{path}_2_{g}")(getattr(self, f"conv{path}_2_{g}")(x))
            outs.append(prev)
        return torch.cat(outs, 1)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        parts = torch.split(out, self.scale_width, 1)
        out = self._path(1, parts) + self._path(2, parts)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _layer(block, inplanes, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


PATCHES = ("p1", "p2", "p3", "p4")   # top-left, top-right, bottom-left, bottom-right


class MANet(nn.Module):
    def __init__(self, num_classes=7, width_mult=1.0, beta=0.6, layers=(2, 2, 2, 2),
                 in_chans=3, **_):
        super().__init__()
        w = [max(8, int(round(c * width_mult))) for c in (64, 128, 256, 512)]
        self.beta = beta
        self.conv1 = nn.Conv2d(in_chans, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _layer(BasicBlock, w[0], w[0], layers[0])
        self.layer2 = _layer(BasicBlock, w[0], w[1], layers[1], stride=2)
        for p in PATCHES:
            setattr(self, f"layer3_1_{p}", _layer(AttentionBlock, w[1], w[2], layers[2], 2))
            setattr(self, f"layer4_1_{p}", _layer(AttentionBlock, w[2], w[3], layers[3], 1))
        self.layer3_2 = _layer(MulScaleBlock, w[1], w[2], layers[2], stride=2)
        self.layer4_2 = _layer(MulScaleBlock, w[2], w[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = w[3]
        self.fc_1 = nn.Linear(w[3], num_classes)
        self.fc_2 = nn.Linear(w[3], num_classes)
        self.pretrained_cfg = {"classifier": None}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward_parts(self, x) -> dict:
        """`local` and `global_` logits [B, C]; `patches` [B, 4, C', h, w] (the four quadrant
        maps after layer4); `feat_local` and `feat_global` [B, C'] (the pooled maps)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        if h == 0 or w == 0:
            raise ValueError(f"MA-Net needs at least 2×2 maps after layer2 (32 px faces), got "
                             f"{tuple(x.shape[-2:])}")
        quads = (x[..., :h, :w], x[..., :h, w:2 * w], x[..., h:2 * h, :w], x[..., h:2 * h, w:2 * w])
        patches = [getattr(self, f"layer4_1_{p}")(getattr(self, f"layer3_1_{p}")(q))
                   for p, q in zip(PATCHES, quads)]
        local = torch.cat([torch.cat(patches[:2], 3), torch.cat(patches[2:], 3)], 2)
        feat_local = self.avgpool(local).flatten(1)
        feat_global = self.avgpool(self.layer4_2(self.layer3_2(x))).flatten(1)
        return {"local": self.fc_1(feat_local), "global_": self.fc_2(feat_global),
                "patches": torch.stack(patches, 1), "feat_local": feat_local,
                "feat_global": feat_global}

    def forward(self, x):
        out = self.forward_parts(x)
        return self.beta * out["local"] + (1 - self.beta) * out["global_"]

    def reset_classifier(self, num_classes: int, **_):
        self.fc_1 = nn.Linear(self.num_features, num_classes)
        self.fc_2 = nn.Linear(self.num_features, num_classes)


def _manet(width_mult, kwargs):
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return MANet(width_mult=width_mult, **kwargs)


@register_model
def ferbench_manet(pretrained=False, **kwargs):
    """MA-Net with the official code's module names and widths; 224 px in the paper."""
    return _manet(1.0, kwargs)


@register_model
def ferbench_manet_quarter(pretrained=False, **kwargs):
    """MA-Net at a quarter of every width: the CPU size."""
    return _manet(0.25, kwargs)
