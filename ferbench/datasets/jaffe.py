"""JAFFE: 213 posed images of 10 Japanese women, class and subject read from the file names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..labels import BASIC7, CLASSES
from . import _files as F
from .base import Dataset, DatasetAdapter

# `KA.AN1.39.tiff`: subject, class code with the pose's repeat number, running image number.
# Converted copies keep the original name and add an extension (KA.AN1.39.tiff.png).
_NAME = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d+)\.(\d+)(\.[A-Za-z]+)+$")
CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
         "SA": "sadness", "SU": "surprise"}
# The ten posers, numbered in a fixed order so `subject` codes do not depend on which files
# are present; an unknown poser gets a code after these.
SUBJECTS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")


class JAFFE(DatasetAdapter):
    """JAFFE's original flat folder; one split, `all`, for train and test roles alike."""

    name = "jaffe"
    grey = True
    description = "JAFFE lab-posed expressions (7 classes, 213 images, 10 subjects)"
    layouts = {"flat": "one folder of images named like KA.AN1.39.tiff"}
    options: dict[str, Any] = {}

    def detect(self, root: Path) -> list[str]:
        names = F.image_files(root, root, recursive=False)
        return ["flat"] if any(_NAME.match(n) for n in names) else []

    def open(self, root: Path | None, layout: str, options: dict[str, Any]) -> Dataset:
        root = Path(root)
        ids, labels, subjects = [], [], []
        for rel in F.image_files(root, root, recursive=False):
            m = _NAME.match(rel)
            if m is None:
                raise DataError(root / rel, "not a JAFFE name like KA.AN1.39.tiff "
                                            "(subject.CLASSn.number)")
            subject, code = m.group(1).upper(), m.group(2).upper()
            if code not in CODES:
                raise DataError(root / rel, f"unknown class code {code!r} "
                                            f"(expected one of {', '.join(CODES)})")
            ids.append(rel)
            labels.append(CLASSES.index(CODES[code]))
            subjects.append(subject)
        extra = sorted(set(subjects) - set(SUBJECTS))
        table = {s: i for i, s in enumerate(SUBJECTS + tuple(extra))}
        samples = F.make_split(self.name, "all", root, ids, labels, BASIC7, extras={
            "subject": np.asarray([table[s] for s in subjects], dtype=np.int64)})
        notes = ["JAFFE has no official split: the one split 'all' plays train and test; use it "
                 "as a cross-dataset target, or split by subject (extra 'subject')"]
        if extra:
            notes.append(f"subjects beyond the ten of JAFFE: {', '.join(extra)}")
        return Dataset(name=self.name, root=root, layout=layout, classes=BASIC7,
                       splits={"all": samples}, train="all", test="all", notes=notes)
