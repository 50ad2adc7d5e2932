"""The `embed:PATH` space: pooled features of a frozen image model.

Three kinds of file: a ferbench `weights.pt` (its run key says which dataset and
protocol trained it: only one trained under this run's protocol, on the same noisy labels,
is accepted, since a model trained on other labels would leak them), any timm
checkpoint of `aux_backbone`, or an open_clip image tower (`aux_backbone=clip:MODEL`,
`open_clip_torch` installed; OpenAI's TorchScript `.pt` or an open_clip state dict).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ferbench.errors import ConfigError, DataError, missing_file


def _source_backbone(path: Path) -> str | None:
    """The backbone a ferbench run used, from the result stored beside its weights."""
    result = path.with_name(path.name.replace(".weights.pt", ".json"))
    try:
        return json.loads(result.read_text())["config"]["method"]["backbone"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_source_run(path: Path, source: dict, ctx) -> None:
    """A ferbench weights file is accepted only from a run on this dataset and protocol
    (the protocol folder names the noise seed and validation share too)."""
    here = ctx.run_key
    if here is None:
        raise DataError(path, "is a ferbench weights file, but this run has no run key to "
                              "check it against (only stored runs can use one)")
    same = (source.get("dataset"), source.get("protocol")) == (here.dataset, here.protocol)
    if not same:
        raise DataError(path, f"was trained on {source.get('dataset')} under "
                              f"{source.get('protocol')}, this run is {here.dataset} under "
                              f"{here.protocol}: its features would carry other labels into "
                              f"the space")


def _timm_model(ctx, name: str, path: Path, entry_name: str) -> torch.nn.Module:
    import timm

    from ferbench import models  # noqa: F401  (ferbench's backbones)

    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as e:
        raise ConfigError(f"aux_backbone {name!r}: {e}") from None
    entry = ctx.load_weights(model, path, name=entry_name,
                             strip_prefixes=("module.", "backbone.", "model."),
                             matching_only=True)
    if entry.get("left_random"):
        raise DataError(path, f"does not fit backbone {name!r}: {len(entry['left_random'])} "
                              f"of its tensors not in the file (first: "
                              f"{entry['left_random'][0]}); set aux_backbone")
    return model


def _clip_tower(ctx, model_name: str, path: Path) -> tuple[torch.nn.Module, tuple, tuple]:
    import open_clip

    try:
        model = open_clip.create_model(model_name, pretrained=None)
    except RuntimeError as e:
        raise ConfigError(f"aux_backbone clip:{model_name}: {e}") from None
    visual = model.visual
    from ferbench.weights import read_state_dict

    # A whole CLIP file (OpenAI's TorchScript archive or an open_clip state dict): only the
    # image tower's tensors are taken; a tower's own file as it is. Every one must be there.
    prefixes = ("module.visual.", "visual.")
    whole = any(k.startswith(prefixes) for k in read_state_dict(path)[0])
    entry = ctx.load_weights(visual, path, name=f"aux clip:{model_name}",
                             strip_prefixes=prefixes, matching_only=True, only_prefixed=whole)
    if entry.get("left_random"):
        raise DataError(path, f"does not fit the {model_name} image tower: "
                              f"{len(entry['left_random'])} of its tensors not in the file "
                              f"(first: {entry['left_random'][0]})")
    mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return visual, tuple(mean), tuple(std)


@torch.no_grad()
def embedding_points(ctx, path: Path, config) -> torch.Tensor:
    """Features [N, D] of the training images (no augmentation) through the frozen model."""
    from ferbench.nn import IMAGENET_MEAN, IMAGENET_STD, normalize
    from ferbench.weights import read_state_dict

    if not path.is_file():
        raise missing_file(path, "embedding model file")
    backbone = getattr(config, "aux_backbone", None)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if backbone and str(backbone).startswith("clip:"):
        model, mean, std = _clip_tower(ctx, str(backbone)[5:], path)
        size = getattr(model, "image_size", None)
        size = size[0] if isinstance(size, (tuple, list)) else size
    else:
        _, source = read_state_dict(path)
        if source is not None:
            check_source_run(path, source, ctx)
        name = backbone or (_source_backbone(path) if source else None) or config.backbone
        model = _timm_model(ctx, name, path, f"aux embed {name}")
        size = None
    model = ctx.frozen(model)
    feats = []
    for batch in ctx.iterate("train", views=("none",), batch_size=256):
        x = batch["views"]["none"]
        if size and x.shape[-1] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                                align_corners=False)
        with ctx.autocast():
            f = model(normalize(x, mean, std))
        feats.append(f.float().reshape(len(x), -1).cpu())
    return torch.cat(feats)
