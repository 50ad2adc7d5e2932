"""CK+ (Lucey et al., CVPR-W 2010): posed expression sequences of 123 subjects, 8 classes.

The usual export holds a few frames of each sequence as `<class>/S<subject>_<seq>_<frame>.png`.
Frames of one subject are near-identical, so every split here is by subject, never
by image. CK+ has no official split: `all` (every image) is the natural target of a
cross-dataset protocol, and `train`/`test` are a seeded subject-disjoint hold-out,
or with `fold >= 0` one fold of a seeded subject-disjoint k-fold.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..labels import CLASSES, canonical
from . import _files as F
from .base import Dataset, DatasetAdapter
from .samples import FileSource, Samples

EXTS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
# `S010_004_00000019.png`: subject 10, sequence 4, frame 19 (some exports lowercase the S).
SUBJECT = re.compile(r"^[Ss](\d+)_")


class CKPlus(DatasetAdapter):
    name = "ckplus"
    description = "CK+: 123 subjects' posed expressions, 8 classes; subject-disjoint splits"
    layouts = {"folders": "<class>/S<subject>_<seq>_<frame>.png (.png, .jpg, .jpeg or .tiff)"}
    options = {"split_seed": 0, "test_fraction": 0.2, "folds": 10, "fold": -1}
    grey = True
    # The codes of CK+'s own Emotion/*_emotion.txt files (its README).
    native_labels = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear",
                     5: "happiness", 6: "sadness", 7: "surprise"}
    # CK+ has no official split and its release is sequences (593, 327 of them labelled),
    # not images: these are the counts of the common 48x48 export of it (890 PNG frames of
    # 123 subjects, 8 classes), compared on `all`, which holds every image.
    official_counts = {
        "source": "the common 48x48 CK+ export, 890 frames of 123 subjects",
        "splits": {
            "all": {"total": 890, "classes": {
                "anger": 43, "contempt": 17, "disgust": 56, "fear": 25, "happiness": 66,
                "neutral": 575, "sadness": 28, "surprise": 80}},
        },
    }

    def detect(self, root: Path) -> list[str]:
        for folder in F.subdirs(root):
            if canonical(folder.name) is None:
                continue
            names = F.image_files(folder, folder, recursive=False, exts=EXTS)
            if any(SUBJECT.match(n) for n in names):
                return ["folders"]
        return []

    def open(self, root: Path, layout: str, options: dict) -> Dataset:
        seed, fraction = options["split_seed"], options["test_fraction"]
        folds, fold = options["folds"], options["fold"]
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"option test_fraction={fraction} of dataset ckplus: "
                              f"expected a number between 0 and 1")
        if folds < 2 or fold >= folds:
            raise ConfigError(f"options folds={folds}, fold={fold} of dataset ckplus: expected "
                              f"folds >= 2 and fold in 0..{folds - 1} (or -1 for no fold)")
        # A value the chosen split never reads is refused rather than silently ignored.
        if fold >= 0 and fraction != self.options["test_fraction"]:
            raise ConfigError(f"options fold={fold}, test_fraction={fraction} of dataset "
                              f"ckplus: a fold's test share is 1/folds; test_fraction is for "
                              f"the hold-out split (fold=-1)")
        if fold < 0 and folds != self.options["folds"]:
            raise ConfigError(f"option folds={folds} of dataset ckplus is read only with a "
                              f"fold: add -o fold=0 (0..{folds - 1})")
        items = F.scan_class_folders(root, exts=EXTS)
        ids = tuple(rel for rel, _ in items)
        labels = np.asarray([label for _, label in items], dtype=np.int64)
        subject = np.asarray([_subject(root, rel) for rel in ids], dtype=np.int64)
        if not ids:
            raise DataError(root, "no images in the class folders")
        subjects = np.unique(subject)
        order = np.random.default_rng(seed).permutation(subjects)
        if fold >= 0:
            test_subjects = order[np.arange(len(order)) % folds == fold]
            how = (f"fold {fold} of {folds}: subjects sorted, shuffled with split_seed={seed}, "
                   f"dealt round-robin into folds; test = fold {fold}, train = the others")
        else:
            n_test = min(len(order) - 1, max(1, round(fraction * len(order))))
            test_subjects = order[:n_test]
            how = (f"hold-out: subjects sorted, shuffled with split_seed={seed}, the first "
                   f"{n_test} of {len(order)} ({fraction:g}) in test, the rest in train")
        in_test = np.isin(subject, test_subjects)
        if in_test.all() or not in_test.any():
            raise ConfigError(f"dataset ckplus: {len(subjects)} subject(s) are too few for "
                              f"folds={folds}, test_fraction={fraction}")

        def make(split, index):
            return Samples(dataset="ckplus", split=split, ids=tuple(ids[i] for i in index),
                           source=FileSource(root, [ids[i] for i in index]),
                           labels=labels[index], classes=CLASSES,
                           extras={"subject": subject[index]})

        splits = {"all": make("all", np.arange(len(ids))),
                  "train": make("train", np.flatnonzero(~in_test)),
                  "test": make("test", np.flatnonzero(in_test))}
        notes = ["labels from the class folder names; subject from the file name (S<subject>_)",
                 f"{len(subjects)} subjects; train/test split by subject, never by image ({how})",
                 "`all` holds every image: the split to test on when CK+ is a cross-dataset target"]
        return Dataset(name="ckplus", root=root, layout=layout, classes=CLASSES, splits=splits,
                       train="train", test="test", val=None, notes=notes)


def _subject(root: Path, rel: str) -> int:
    """The subject number in a file name; DataError naming the file when there is none."""
    m = SUBJECT.match(rel.rsplit("/", 1)[-1])
    if m is None:
        raise DataError(root / rel, "file name does not start with S<subject>_ (expected "
                                    "S<subject>_<sequence>_<frame>, e.g. S010_004_00000019.png)")
    return int(m.group(1))
