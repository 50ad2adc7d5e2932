"""Any tree of class folders named after emotions, with or without split folders above them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from ..labels import CLASSES, canonical
from . import _files as F
from .base import Dataset, DatasetAdapter


class ImageFolder(DatasetAdapter):
    """`<split>/<class>/` (or just `<class>/`) trees; class names map onto the canonical space."""

    name = "imagefolder"
    description = "any <split>/<class name>/ image tree (class names such as happy, angry)"
    layouts = {
        "splits": "<split>/<class name>/ images; train/, test/ and val/ (or valid/, "
                  "validation/) take those roles",
        "classes": "<class name>/ images directly under the root: one split 'all'",
    }
    options: dict[str, Any] = {}

    def detect(self, root: Path) -> list[str]:
        found = []
        top = F.subdirs(root)
        if any(canonical(d.name) for d in top):
            found.append("classes")
        if any(canonical(c.name) for d in top if not canonical(d.name) for c in F.subdirs(d)):
            found.append("splits")
        return found

    def open(self, root: Path | None, layout: str, options: dict[str, Any]) -> Dataset:
        root = Path(root)
        notes: list[str] = []
        if layout == "classes":
            parts = {"all": root}
        else:
            parts = {d.name: d for d in F.subdirs(root) if F.subdirs(d)}
            skipped = [d.name for d in F.subdirs(root) if d.name not in parts]
            if skipped:
                notes.append(f"folders without class folders skipped: {', '.join(skipped)}")
        found = {name: _scan(root, folder, notes) for name, folder in parts.items()}
        classes = tuple(c for c in CLASSES
                        if any(CLASSES.index(c) in labs for _, labs in found.values()))
        splits = {name: F.make_split(self.name, name, root, ids, labs, classes)
                  for name, (ids, labs) in found.items()}
        train, test, val = _roles(root, list(splits), notes)
        return Dataset(name=self.name, root=root, layout=layout, classes=classes, splits=splits,
                       train=train, test=test, val=val, notes=notes)


def _scan(root: Path, folder: Path, notes: list[str]) -> tuple[list[str], list[int]]:
    ids, labels = [], []
    for d in F.subdirs(folder):
        label = F.folder_class(d, CLASSES)
        files = F.image_files(root, d)
        ids += files
        labels += [label] * len(files)
    loose = F.image_files(root, folder, recursive=False)
    if loose:
        notes.append(f"{len(loose)} images directly in {folder.relative_to(root).as_posix()}/, "
                     f"outside any class folder, skipped")
    return ids, labels


def _roles(root: Path, names: list[str], notes: list[str]):
    train, test, val = F.split_roles(names, root)
    if train is None and len(names) == 1:
        notes.append(f"one split, {names[0]!r}: it plays train and test alike")
        return names[0], names[0], None
    if train is None or test is None:
        raise DataError(root, f"split folders {', '.join(names) or 'none'}: need train/ and "
                              f"test/ (or val/, valid/, validation/)")
    if val is None and test.lower() not in F.TEST_NAMES:
        notes.append(f"{test}/ serves as the test split (no test/ folder)")
    return train, test, val
