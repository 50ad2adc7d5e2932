"""Named augmentation views on whole batches of cached uint8 images, on the training device.

A view turns uint8 [B, H, W, C] into float [B, 3, H, W] in [0, 1]. Random
parameters are drawn per sample from the engine's generator, so a run is
reproducible and a resumed epoch sees the same augmentations. Crop and flip
are two gathers on the uint8 batch (no per-sample Python, no padded copy); the
affine and photometric parts of the strong view are batched tensor ops.

Views are looked up by name in the plugin registry (`ferbench_register_views`);
the built-in ones below are registered by `ferbench.data.views` like any plugin's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import plugins
from ..errors import ConfigError, unknown_name


def _lookup(name: str):
    """The registered view called `name`. `apply_view` runs once per batch: the registry is
    built once per process, so this is a few dict lookups."""
    reg = plugins.registry()
    if name not in reg.views:
        raise unknown_name("augmentation view", name, reg.views)
    return reg.get("views", name)  # a name two plugins claim: one error naming both


def _resolve(spec):
    name, params = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
    view = _lookup(name)
    defaults = view.defaults
    for key, value in params.items():
        if key not in defaults:
            raise unknown_name(f"parameter of augmentation view {name}", key, defaults)
        # bool before number: a flag is not a number, a number is not a flag
        kind = bool if isinstance(defaults[key], bool) else \
            (int, float) if isinstance(defaults[key], (int, float)) else object
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"augmentation view {name}: {key}={value!r} must be "
                              f"{'true or false' if kind is bool else 'a number'}")
        if isinstance(defaults[key], int) and not isinstance(defaults[key], bool) \
                and not float(value).is_integer():
            raise ConfigError(f"augmentation view {name}: {key}={value!r} must be a whole number")
        lo, hi = view.ranges.get(key, (None, None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"augmentation view {name}: {key}={value!r} must be in "
                              f"[{lo}, {hi}]")
    return name, view, {**defaults, **params}


def resolve_view(spec) -> tuple[str, dict]:
    """A view given as a name or (name, params) → (name, full params), for the config hash."""
    name, _, params = _resolve(spec)
    return name, params


def apply_view(spec, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 [B, H, W, C] → float [B, 3, H, W]; grey is repeated to 3 channels only at the end,
    so every op before runs on one channel."""
    _, view, params = _resolve(spec)
    x = view.fn(images, gen, **params)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, C] → float [B, C, H, W] in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def _rand(gen, n, device, lo=0.0, hi=1.0):
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def crop_flip(images: torch.Tensor, gen, pad: float, flip: bool) -> torch.Tensor:
    """Random pad-and-crop (reflect padding of `pad`·size) and horizontal flip.

    No padded copy is made: each output row and column is an index into the image,
    reflected at the border, so the crop is a row gather (whole rows, `index_select`)
    then a column gather, both on the uint8 batch.
    """
    b, h, w, c = images.shape
    p = int(round(pad * h))
    dev = images.device
    oy = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=dev)
    ox = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=dev)
    rows = _reflect(oy[:, None] + torch.arange(h, device=dev) - p, h)
    cols = _reflect(ox[:, None] + torch.arange(w, device=dev) - p, w)
    if flip:
        mirrored = torch.rand(b, generator=gen, device=dev) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    flat_rows = (torch.arange(b, device=dev)[:, None] * h + rows).flatten()
    picked = images.reshape(b * h, w, c).index_select(0, flat_rows).view(b, h, w, c)
    if c == 1:
        # Grey: the columns are rows of the transposed batch, so they too are a whole-row
        # gather (faster on CPU than a per-element one); the result is a transposed view.
        flat_cols = (torch.arange(b, device=dev)[:, None] * w + cols).flatten()
        t = picked.view(b, h, w).transpose(1, 2).contiguous().view(b * w, h)
        return t.index_select(0, flat_cols).view(b, w, h).transpose(1, 2).unsqueeze(-1)
    return picked.gather(2, cols[:, None, :, None].expand(b, h, w, c))


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    """Indices in [-(n-1), 2(n-1)] mirrored into [0, n-1] (reflect padding, edge not repeated)."""
    index = index.abs()
    return torch.where(index > n - 1, 2 * (n - 1) - index, index)


def random_erase(x: torch.Tensor, gen, p: float, scale=(0.02, 0.2)) -> torch.Tensor:
    """Random erasing: a rectangle per chosen sample filled with a random grey level."""
    b, _, h, w = x.shape
    dev = x.device
    area = _rand(gen, b, dev, *scale) * h * w
    ratio = torch.exp(_rand(gen, b, dev, math.log(0.3), math.log(3.3)))
    eh = (area * ratio).sqrt().clamp(1, h).long()
    ew = (area / ratio).sqrt().clamp(1, w).long()
    y0 = (_rand(gen, b, dev) * (h - eh + 1)).long()
    x0 = (_rand(gen, b, dev) * (w - ew + 1)).long()
    ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
    inside = ((ys[None, :] >= y0[:, None]) & (ys[None, :] < (y0 + eh)[:, None]))[:, :, None] & \
             ((xs[None, :] >= x0[:, None]) & (xs[None, :] < (x0 + ew)[:, None]))[:, None, :]
    chosen = torch.rand(b, generator=gen, device=dev) < p
    mask = (inside & chosen[:, None, None])[:, None]
    fill = torch.rand(b, 1, 1, 1, generator=gen, device=dev, dtype=x.dtype)
    return torch.where(mask, fill, x)


def affine(x: torch.Tensor, gen, degrees: float, scale: float, shear: float = 0.0,
           translate: float = 0.0) -> torch.Tensor:
    """Per-sample rotation, isotropic scale, shear and translation with one grid_sample."""
    b = x.shape[0]
    dev = x.device
    ang = _rand(gen, b, dev, -degrees, degrees) * math.pi / 180
    sc = _rand(gen, b, dev, 1 - scale, 1 + scale)
    sh = _rand(gen, b, dev, -shear, shear) * math.pi / 180
    tx, ty = _rand(gen, b, dev, -translate, translate), _rand(gen, b, dev, -translate, translate)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin + torch.tan(sh), tx], 1),
                         torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def jitter(x: torch.Tensor, gen, brightness: float, contrast: float) -> torch.Tensor:
    """Per-sample brightness and contrast."""
    b = x.shape[0]
    dev = x.device
    br = _rand(gen, b, dev, 1 - brightness, 1 + brightness).view(b, 1, 1, 1)
    ct = _rand(gen, b, dev, 1 - contrast, 1 + contrast).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x * br - mean) * ct + mean).clamp_(0, 1)


def view_none(images, gen):
    """The image itself, as floats."""
    return to_float(images)


def view_weak(images, gen, pad, flip, **kw):
    """Pad-and-crop, a random mirror, and random erasing when `erase` > 0."""
    x = to_float(crop_flip(images, gen, pad, flip))
    return random_erase(x, gen, kw["erase"]) if kw["erase"] > 0 else x


def view_flip(images, gen):
    """Deterministic horizontal mirror (test-time augmentation)."""
    return to_float(images.flip(2))


def view_strong(images, gen, pad, degrees, scale, shear, brightness, contrast, ops, **kw):
    """RandAugment-like: crop+flip, then `ops` of {affine, jitter, autocontrast, posterize,
    solarize, sharpen-blur} chosen per sample, then random erasing."""
    x = to_float(crop_flip(images, gen, pad, True))
    b, dev = x.shape[0], x.device
    candidates = [
        lambda t: affine(t, gen, degrees, scale, shear, 0.1),
        lambda t: jitter(t, gen, brightness, contrast),
        _autocontrast,
        lambda t: torch.floor(t * 15.0) / 15.0,
        lambda t: torch.where(t > 0.8, 1.0 - t, t),
        lambda t: _blur(t),
    ]
    scores = torch.rand(b, len(candidates), generator=gen, device=dev)
    picked = scores.argsort(dim=1)[:, :int(ops)]
    for k, op in enumerate(candidates):
        chosen = torch.nonzero((picked == k).any(dim=1)).flatten()
        if len(chosen):
            x[chosen] = op(x[chosen])
    return random_erase(x, gen, kw["erase"]) if kw["erase"] > 0 else x


def _autocontrast(x):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-3)).clamp_(0, 1)


def _blur(x):
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    k = (k[:, None] * k[None, :]) / 16
    w = k.expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w, groups=x.shape[1])
