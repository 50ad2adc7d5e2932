"""The official ESR script's augmentation as a ferbench view, `esr`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ferbench.data.augment import crop_flip, jitter, to_float


def _uniform(gen, n, device, lo, hi):
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def view_esr(images, gen, degrees, translate, zoom, brightness, contrast):
    """h-flip, brightness/contrast jitter, then one affine: rotation ±`degrees`, translation
    ±`translate` of the size, zoom in 1..1+`zoom` (torchvision's RandomAffine(30, (0.1, 0.1),
    (1, 1.25)) of esr_affectnet.py); pixels stay in [0, 1]."""
    x = jitter(to_float(crop_flip(images, gen, 0.0, True)), gen, brightness, contrast)
    b, dev = x.shape[0], x.device
    ang = _uniform(gen, b, dev, -degrees, degrees) * math.pi / 180
    sc = _uniform(gen, b, dev, 1.0, 1.0 + zoom)
    tx, ty = (_uniform(gen, b, dev, -2 * translate, 2 * translate) for _ in range(2))
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
