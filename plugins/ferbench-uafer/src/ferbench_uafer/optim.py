"""The code's optimiser: AdamW over layer-wise decayed groups, the first layers frozen, and a
per-step linear warm-up then half-cosine schedule."""

from __future__ import annotations

import math

import torch


def layer_id(name: str, depth: int) -> int:
    """The code's layer id of an image-tower parameter (names relative to the tower): 0 for the
    patch embedding, class and positional embeddings and ln_pre; b + 1 for block b; depth + 1
    for the rest (ln_post, the projection)."""
    if name.startswith(("conv1", "class_embedding", "positional_embedding", "ln_pre")):
        return 0
    if name.startswith("transformer.resblocks."):
        return int(name.split(".")[2]) + 1
    return depth + 1


def freeze_first_layers(tower: torch.nn.Module, depth: int, fix_layer: int) -> list[str]:
    """Parameters with layer id <= fix_layer stop training (the code leaves them out of the
    optimiser and turns their gradients off); returns their names."""
    frozen = []
    for name, p in tower.named_parameters():
        if layer_id(name, depth) <= fix_layer:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def layer_groups(tower: torch.nn.Module, depth: int, weight_decay: float,
                 layer_decay: float) -> list[dict]:
    """AdamW groups of the trainable parameters: lr scale layer_decay^(depth + 1 − id);
    weight decay only on parameters of two or more dimensions."""
    groups: dict = {}
    for name, p in tower.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        decay = p.ndim >= 2
        key = (lid, decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "layer_id": lid,
                           "lr_scale": layer_decay ** (depth + 1 - lid),
                           "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    # The top layer's group first: the engine's history logs the first group's rate.
    return [groups[k] for k in sorted(groups, reverse=True)]


def warmup_cosine(t: float, warmup: float, total: float, lr: float, min_lr: float) -> float:
    """The code's rate at fractional epoch t: lr·t/warmup while warming up, then a half cosine
    from lr to min_lr at `total`."""
    if t < warmup:
        return lr * t / warmup
    span = max(total - warmup, 1e-12)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t - warmup) / span)))
