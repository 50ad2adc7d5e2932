"""ESR with CBAM: a shared base and N convolutional branches, as the diversified code has it.

Layout of the official code (model/diversified_esr.py, model/cbam.py): base convs 5×5 3→64,
3×3 64→128 + max-pool, 3×3 128→128, 3×3 128→128 + max-pool; each branch 3×3 128→128,
128→256 + max-pool, 256→256, 256→512 (padding 1), GAP, linear 512 → C. Every conv is followed
by BatchNorm, ReLU and a CBAM. Unpadded, so the input must be at least 54 px (96 px gives
6×6 maps at the last CBAM); `padded=True` pads every conv so smaller faces fit (a stated
departure). Registered with timm as `ferbench_esr` and `ferbench_esr_quarter` (a quarter of
every width); their `forward` is the mean of the branches' logits, so any method can use them
by name, and `forward_branches` gives what the diversified methods need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

MIN_UNPADDED = 54


class ChannelGate(nn.Module):
    """CBAM's channel attention: a shared MLP (reduction 16) on average- and max-pooled maps."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))

    def forward(self, x):
        raw = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        attn = torch.sigmoid(raw)
        return x * attn[:, :, None, None], attn


class BasicConv(nn.Module):
    """The spatial gate's 7×7 conv over channel max and mean, with its BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    """CBAM's spatial attention."""

    def __init__(self):
        super().__init__()
        self.spatial = BasicConv()

    def forward(self, x):
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        attn = torch.sigmoid(self.spatial(pooled))
        return x * attn, attn


class CBAM(nn.Module):
    """Channel gate then spatial gate; returns the map and both attentions. The attribute
    names are the official code's (model/cbam.py), so its checkpoints load as they are."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x):
        x, attn_ch = self.ChannelGate(x)
        x, attn_sp = self.SpatialGate(x)
        return x, attn_ch, attn_sp


class ConvUnit(nn.Module):
    """conv → BatchNorm → ReLU (→ max-pool) → CBAM, the unit every ESR layer repeats.

    Without CBAM (the original ESR) the unit returns, in place of the attentions, its map's
    channel mean [B, 1, H, W] and spatial mean [B, C]: what the term then compares."""

    def __init__(self, cin, cout, k, pad, pool=False, cbam=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, 1, pad)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = pool
        self.cbam = CBAM(cout) if cbam else None

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        if self.pool:
            x = F.max_pool2d(x, 2)
        if self.cbam is None:
            return x, x.mean((2, 3)), x.mean(1, keepdim=True)
        return self.cbam(x)


def _w(c: int, mult: float) -> int:
    return max(16, int(round(c * mult)))


class Base(nn.Module):
    def __init__(self, mult=1.0, padded=False, in_chans=3, cbam=True):
        super().__init__()
        p = int(padded)
        self.units = nn.ModuleList([
            ConvUnit(in_chans, _w(64, mult), 5, 2 * p, cbam=cbam),
            ConvUnit(_w(64, mult), _w(128, mult), 3, p, pool=True, cbam=cbam),
            ConvUnit(_w(128, mult), _w(128, mult), 3, p, cbam=cbam),
            ConvUnit(_w(128, mult), _w(128, mult), 3, p, pool=True, cbam=cbam)])

    def forward(self, x):
        for unit in self.units:
            x, _, _ = unit(x)
        return x


class Branch(nn.Module):
    def __init__(self, num_classes, mult=1.0, padded=False, cbam=True):
        super().__init__()
        p = int(padded)
        self.units = nn.ModuleList([
            ConvUnit(_w(128, mult), _w(128, mult), 3, p, cbam=cbam),
            ConvUnit(_w(128, mult), _w(256, mult), 3, p, pool=True, cbam=cbam),
            ConvUnit(_w(256, mult), _w(256, mult), 3, p, cbam=cbam),
            ConvUnit(_w(256, mult), _w(512, mult), 3, 1, cbam=cbam)])
        self.num_features = _w(512, mult)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        """Logits [B, C], the pooled features [B, F], and the last CBAM's channel attention
        [B, F] and spatial map [B, H, W] (the diversity term's inputs)."""
        for unit in self.units:
            x, attn_ch, attn_sp = unit(x)
        feats = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(feats), feats, attn_ch, attn_sp[:, 0]


class ESR(nn.Module):
    """The base and `n_branches` branches; `active` branches take part in forward passes
    (incremental training adds one per phase). `cbam=False` is the original ESR of
    Siqueira et al. (no attention modules)."""

    def __init__(self, num_classes=8, n_branches=9, width_mult=1.0, padded=False, in_chans=3,
                 cbam=True, **_):
        super().__init__()
        self.base = Base(width_mult, padded, in_chans, cbam)
        self.branches = nn.ModuleList(Branch(num_classes, width_mult, padded, cbam)
                                      for _ in range(n_branches))
        self.num_features = self.branches[0].num_features
        self.padded = padded
        self.active = n_branches
        self.pretrained_cfg = {"classifier": None}

    def forward_branches(self, x) -> dict:
        """Per active branch, stacked on dim 1: `logits` [B, N, C], `features` [B, N, F],
        `attn_ch` [B, N, F], `attn_sp` [B, N, H, W]."""
        if not self.padded and min(x.shape[-2:]) < MIN_UNPADDED:
            raise ValueError(f"ESR's unpadded layout needs at least {MIN_UNPADDED} px, got "
                             f"{x.shape[-1]}: build it with padded=True for smaller faces")
        shared = self.base(x)
        outs = [b(shared) for b in self.branches[:self.active]]
        return {k: torch.stack([o[i] for o in outs], 1)
                for i, k in enumerate(("logits", "features", "attn_ch", "attn_sp"))}

    def forward(self, x):
        return self.forward_branches(x)["logits"].mean(1)

    def reset_classifier(self, num_classes: int, **_):
        for b in self.branches:
            b.fc = nn.Linear(b.num_features, num_classes)


def _esr(width_mult, kwargs):
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return ESR(width_mult=width_mult, **kwargs)


@register_model
def ferbench_esr(pretrained=False, **kwargs):
    """ESR with CBAM (9 branches unless `n_branches`), the diversified code's widths; 96 px."""
    return _esr(1.0, kwargs)


@register_model
def ferbench_esr_quarter(pretrained=False, **kwargs):
    """ESR at a quarter of every width (16-channel floor): the CPU size of ESR."""
    return _esr(0.25, kwargs)
