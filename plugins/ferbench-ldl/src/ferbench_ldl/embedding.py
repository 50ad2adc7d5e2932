"""The `embed:PATH` space: pooled features of a frozen image model.

Three kinds of file: a ferbench `weights.pt` (only one trained on this run's training
images under the same noisy labels is accepted, since a model trained on other labels
would leak them: its run key and result record say so), any timm
checkpoint of `aux_backbone`, or an open_clip image tower (`aux_backbone=clip:MODEL`,
`open_clip_torch` installed; OpenAI's TorchScript `.pt` or an open_clip state dict).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ferbench.errors import ConfigError, DataError, missing_file


def _source_record(path: Path) -> dict | None:
    """The result record a ferbench run stored beside its weights, or None."""
    result = path.with_name(path.name.replace(".weights.pt", ".json"))
    try:
        record = json.loads(result.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _source_backbone(path: Path) -> str | None:
    """The backbone a ferbench run used, from the result stored beside its weights."""
    try:
        return (_source_record(path) or {})["config"]["method"]["backbone"]
    except (KeyError, TypeError):
        return None


def check_source_run(path: Path, source: dict, ctx) -> None:
    """A ferbench weights file is accepted only from a run that trained on this run's
    training images under this run's labels: the same dataset and protocol folder (which
    names the noise seed and validation share), the same training ids in the same order
    (another `n_train` or data seed draws other faces), and noisy labels that agree with
    every flip of the noise file the run stored (two noise files can share a protocol id).
    The record's training fingerprint and noise hash decide (`ctx.training_labels`); the
    arrays and noise file stored beside the weights say what differs."""
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
    record = _source_record(path)
    if record is None:
        raise DataError(path, f"is a ferbench weights file without its result "
                              f"{path.name.replace('.weights.pt', '.json')} beside it: the "
                              f"labels it was trained on cannot be checked against this run's")
    mine = ctx.training_labels
    there = ((record.get("dataset") or {}).get("fingerprints") or {}).get("train")
    noise = ((record.get("protocol") or {}).get("noise") or {}).get("hash")
    if mine is not None and (there, noise) == (mine.fingerprint, mine.noise_hash):
        return  # the same faces under the same labels, exactly
    # Something differs (or this core tells nothing): say what, from the arrays and noise
    # file the source run stored; where those agree, the hashes still differ.
    _check_training_images(path, record, ctx)
    _check_training_labels(path, record, ctx)
    if mine is None:
        return
    if there is None:
        raise DataError(path, "has a result record without the training fingerprint "
                              "(dataset.fingerprints.train): the images it was trained on "
                              "cannot be checked against this run's")
    if there != mine.fingerprint:
        raise DataError(path, f"was trained on other training images (their fingerprint "
                              f"{there}, this run's {mine.fingerprint}): its features would "
                              f"carry other labels into the space")
    # The flips agree as far as they can be read: the noise files still differ (their
    # hash covers the whole file, so a copy with other line order or spellings differs too).
    raise DataError(path, f"was trained under another noise file (noise {noise}, this "
                          f"run's {mine.noise_hash}): run it again under this run's noise "
                          f"file so its labels are known to be this run's")


def _data_text(record: dict) -> str:
    data = (record.get("config") or {}).get("data") or {}
    options = data.get("options") or {}
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "none"


def _check_training_images(path: Path, record: dict, ctx) -> None:
    n_here = len(ctx.train)
    n_there = (record.get("dataset") or {}).get("n_train")
    if n_there != n_here:
        raise DataError(path, f"was trained on {n_there} training images, this run has "
                              f"{n_here} (its data options: {_data_text(record)}): its "
                              f"features would carry other labels into the space")
    arrays = path.with_name(path.name.replace(".weights.pt", ".npz"))
    try:
        with np.load(arrays, allow_pickle=False) as z:
            ids = [str(i) for i in z["train_ids"]]
    except (OSError, ValueError, KeyError):
        raise DataError(path, f"is a ferbench weights file without readable training ids "
                              f"({arrays.name} beside it): the images it was trained on "
                              f"cannot be checked against this run's") from None
    for there, here in zip(ids, ctx.train.ids):
        if there != str(here):
            raise DataError(path, f"was trained on other training images ({there!r} where "
                                  f"this run has {str(here)!r}; its data options: "
                                  f"{_data_text(record)}): its features would carry other "
                                  f"labels into the space")


def _check_training_labels(path: Path, record: dict, ctx) -> None:
    noise = (record.get("protocol") or {}).get("noise")
    if not noise:
        return  # the same images under a protocol without noise: the dataset's own labels
    # The record names its noise file relative to its results folder, four levels above
    # the weights (dataset/protocol/method/config hash).
    try:
        noise_path = path.parent.parents[3] / str(noise.get("file", ""))
        doc = json.loads(noise_path.read_text())
        flips = [(f["id"], f["noisy"]) for f in doc["flips"]]
        classes, transition = list(doc["classes"]), doc["transition"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        raise DataError(path, f"was trained under noise {noise.get('hash')}, but its noise "
                              f"file {noise.get('file')} is not readable: the labels it was trained "
                              f"on cannot be checked against this run's") from None
    if classes != list(ctx.classes):
        raise DataError(path, f"was trained on the classes {', '.join(classes)}, this run's "
                              f"are {', '.join(ctx.classes)}")
    labels = ctx.train.labels.cpu().numpy()
    position = {str(sid): i for i, sid in enumerate(ctx.train.ids)}
    differ = sum(1 for sid, noisy in flips
                 if sid not in position or classes[labels[position[sid]]] != noisy)
    counts = np.asarray(transition, dtype=np.int64).sum(0)
    here = np.bincount(labels, minlength=len(classes))
    if differ or not np.array_equal(counts, here):
        what = (f"{differ} of its {len(flips)} flipped labels differ here" if differ else
                f"its label counts per class {counts.tolist()} are {here.tolist()} here")
        raise DataError(path, f"was trained on other noisy labels than this run's (noise "
                              f"{noise.get('hash')}: {what}): its features would carry them "
                              f"into the space")


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
