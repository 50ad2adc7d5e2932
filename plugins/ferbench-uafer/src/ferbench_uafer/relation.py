"""Multi-granularity feature decoupling (MFD): a global and a local relation score per class,
and the distillation to the frozen teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relation_scores(g, patches, text, topk: int, alpha: float, normalise_text: bool = True):
    """Class scores [B, C] from the projected class token g [B, D], projected patch tokens
    [B, N, D] and text embeddings [C, D].

    global = ĝ·t̂_c; local = the mean of the `topk` largest patch affinities p̂_n·t̂_c, each
    class choosing its own patches; each score L2-normalised across classes, then mixed
    alpha·local + (1 − alpha)·global. `normalise_text=False` keeps the text embeddings raw (the
    code's test pass), which rescales each class's column before the normalisation.
    """
    # In fp32 even under a bf16 autocast, which would run these matmuls in bf16: the class
    # scores differ by a few thousandths, as much as CLIP's scores differ between classes.
    with torch.autocast(g.device.type, enabled=False):
        text = _text(text, normalise_text)
        s_glb = F.normalize(g.float(), dim=-1) @ text.t()
        s_loc = top_patches(patches, text, topk, normalise_text=False).values.mean(1)
        return alpha * F.normalize(s_loc, dim=-1) + (1 - alpha) * F.normalize(s_glb, dim=-1)


def top_patches(patches, text, topk: int, normalise_text: bool = True):
    """The `topk` largest affinities p̂_n·t̂_c of each class and which patches they are
    (`values`, `indices`: [B, topk, C]): each class chooses its own patches."""
    affinity = F.normalize(patches.float(), dim=-1) @ _text(text, normalise_text).t()
    return affinity.topk(topk, dim=1)


def _text(text, normalise: bool):
    text = text.float()
    return F.normalize(text, dim=-1) if normalise else text


def distillation(g, teacher, normalise_teacher: bool = False) -> torch.Tensor:
    """Mean |ĝ − h| over batch and dimensions: the student's normalised global embedding
    against the teacher's projected class token, unnormalised as the code has it."""
    h = teacher.float()
    if normalise_teacher:
        h = F.normalize(h, dim=-1)
    return F.l1_loss(F.normalize(g.float(), dim=-1), h)
