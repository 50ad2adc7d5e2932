"""The data audit: duplicates across splits, identical images with conflicting labels, blank images."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..data.cache import load_cached
from ..data.match import found_in
from ..labels import CLASSES
from .base import Dataset
from .samples import Samples

# A face whose decoded pixels barely vary carries no expression (FER2013 has several).
BLANK_STD = 2.0


@dataclass
class AuditReport:
    cross_split: list[dict] = field(default_factory=list)   # one group per duplicated image
    conflicting: list[dict] = field(default_factory=list)   # identical pixels, different labels
    near_blank: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "cross_split_groups": len(self.cross_split),
            "cross_split_images": sum(len(g["ids"]) for g in self.cross_split),
            "conflicting_groups": len(self.conflicting),
            "conflicting_images": sum(len(g["ids"]) for g in self.conflicting),
            "near_blank": len(self.near_blank),
        }


def role_splits(dataset: Dataset) -> list[str]:
    """The splits that play a role (train, val, test), once each.

    Splits that are unions or re-partitions of others (CK+'s `all`) would report
    every image as a "leak", so the audit leaves them out.
    """
    return [s for s in dict.fromkeys((dataset.train, dataset.val, dataset.test)) if s]


def split_hashes(dataset: Dataset, size: int = 48, mode: str = "L", show_progress=None):
    """{split: cached images and hashes} of the role splits, through the decoded cache."""
    return {name: load_cached(dataset.splits[name], size, mode, show_progress=show_progress)
            for name in role_splits(dataset)}


def audit(dataset: Dataset, size: int = 48, mode: str = "L", show_progress=None) -> AuditReport:
    """Find leaks and flaws in a dataset from the decoded pixels of every split."""
    report = AuditReport()
    cached = split_hashes(dataset, size, mode, show_progress)
    roles = list(cached)
    by_hash: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
    for split in roles:
        for i, h in enumerate(cached[split].hashes):
            by_hash[bytes(h)].append((split, i))
    for members in by_hash.values():
        if len(members) < 2:
            continue
        splits = {s for s, _ in members}
        ids = [dataset.splits[s].ids[i] for s, i in members]
        labels = [CLASSES[int(dataset.splits[s].labels[i])] for s, i in members]
        group = {"ids": ids, "splits": [s for s, _ in members], "labels": labels}
        if len(splits) > 1:
            report.cross_split.append(group)
        if len(set(labels)) > 1:
            report.conflicting.append(group)
    for split in roles:
        std = pixel_std(cached[split].images)
        for i in np.flatnonzero(std < BLANK_STD):
            report.near_blank.append({"id": dataset.splits[split].ids[int(i)], "split": split,
                                      "std": round(float(std[i]), 3)})
    return report


def leaked_test_indices(report: AuditReport, dataset: Dataset) -> np.ndarray:
    """Indices of test samples whose exact pixels also occur in another split."""
    leaked = {i for g in report.cross_split for i, s in zip(g["ids"], g["splits"])
              if s == dataset.test}
    ids = dataset.splits[dataset.test].ids
    return np.asarray([k for k, i in enumerate(ids) if i in leaked], dtype=np.int64)


def faces_shared(test: Samples, source: Dataset, size: int, mode: str,
                 show_progress=None) -> dict:
    """How many of `test`'s faces (near-blank ones left out) also occur in `source`, up to
    re-encoding noise, in all and per role split: what a cross-dataset protocol must not
    test on."""
    images = load_cached(test, size, mode, show_progress=show_progress).images
    faces = np.flatnonzero(pixel_std(images) >= BLANK_STD)
    query = np.asarray(images[faces])
    found = {split: found_in(query, cached.images)
             for split, cached in split_hashes(source, size, mode, show_progress).items()}
    anywhere = np.zeros(len(faces), dtype=bool)
    for f in found.values():
        anywhere |= f
    return {"test_faces": int(len(faces)), "shared": int(anywhere.sum()),
            "per_source_split": {s: int(f.sum()) for s, f in found.items()}}


def pixel_std(images: np.ndarray, block: int = 4096) -> np.ndarray:
    """Each image's standard deviation over its pixels, a block of images at a time."""
    out = np.zeros(len(images), dtype=np.float64)
    for start in range(0, len(images), block):
        x = np.asarray(images[start:start + block], dtype=np.float32)
        out[start:start + len(x)] = x.reshape(len(x), -1).std(axis=1)
    return out
