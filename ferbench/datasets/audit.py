"""The data audit: duplicates across splits, identical images with conflicting labels, blank images."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..data.cache import load_cached
from ..labels import CLASSES
from .base import Dataset

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
        images = cached[split].images
        for start in range(0, len(images), 4096):
            block = np.asarray(images[start:start + 4096], dtype=np.float32)
            std = block.reshape(len(block), -1).std(axis=1)
            for j in np.flatnonzero(std < BLANK_STD):
                i = start + int(j)
                report.near_blank.append({"id": dataset.splits[split].ids[i], "split": split,
                                          "std": round(float(std[j]), 3)})
    return report


def leaked_test_indices(report: AuditReport, dataset: Dataset) -> np.ndarray:
    """Indices of test samples whose exact pixels also occur in another split."""
    leaked = {i for g in report.cross_split for i, s in zip(g["ids"], g["splits"])
              if s == dataset.test}
    ids = dataset.splits[dataset.test].ids
    return np.asarray([k for k, i in enumerate(ids) if i in leaked], dtype=np.int64)
