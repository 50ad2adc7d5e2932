"""RAF-DB (basic, 7 classes) in the official layout and the layouts its users re-export it to."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from ..errors import DataError, unknown_name
from ..labels import BASIC7, canonical, indices
from . import _files as F
from .base import Dataset, DatasetAdapter

# RAF-DB labels are 1-based in this order (EmoLabel/list_patition_label.txt); we shift on read.
RAF_ORDER = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
# Folders 0..6 exist in two orders: RAF's shifted by one (what MAN and UA-FER loaders produce
# after `label - 1`), and the AffectNet-like order of the Diversified-FER README.
ZERO_BASED = {
    "raf0": RAF_ORDER,
    "diversified": ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger"),
}
LABEL_ORDERS = ("raf", "raf0", "diversified")
_IMAGES = {"aligned": "Image/aligned", "original": "Image/original"}
_INDEX_NAMES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
# CEPrompt keeps the index lists in EmoLabel/ and its images in Image/aligned_224/; a list
# may also name paths relative to the root ("").
_INDEX_DIRS = ("", "EmoLabel")
_INDEX_IMAGE_DIRS = ("Image", "Image/aligned_224", "")


class RAFDB(DatasetAdapter):
    """RAF-DB basic: official lists, split label files, index lists or class folders."""

    name = "rafdb"
    description = "RAF-DB basic emotions (7 classes, 12,271 train / 3,068 test)"
    layouts = {
        "official": "EmoLabel/list_patition_label.txt + Image/aligned/ (or Image/original/)",
        "split_files": "EmoLabel/train_label.txt + EmoLabel/test_label.txt + Image/aligned/",
        "index_lists": "images.txt, image_class_labels.txt, train_test_split.txt (UA-FER, "
                       "CEPrompt) + Image/",
        "named_folders": "train/<class name>/, test/<class name>/",
        "numeric_folders": "train/1..7/, test/1..7/ (RAF order), or 0..6 with --label-order",
    }
    options = {"images": "aligned", "label_order": ""}
    # The SCN/RUL/EAC noise lists use the 1-based codes of list_patition_label.txt.
    native_labels = dict(zip(range(1, 8), RAF_ORDER))
    # RAF-DB's basic set (Li, Deng, Du, CVPR 2017), as EmoLabel/list_patition_label.txt
    # lists it: 12,271 train and 3,068 test images, per class.
    official_counts = {
        "source": "RAF-DB basic, EmoLabel/list_patition_label.txt",
        "splits": {
            "train": {"total": 12271, "classes": {
                "surprise": 1290, "fear": 281, "disgust": 717, "happiness": 4772,
                "sadness": 1982, "anger": 705, "neutral": 2524}},
            "test": {"total": 3068, "classes": {
                "surprise": 329, "fear": 74, "disgust": 160, "happiness": 1185,
                "sadness": 478, "anger": 162, "neutral": 680}},
        },
    }

    def detect(self, root: Path) -> list[str]:
        found = []
        emo = root / "EmoLabel"
        if (emo / "list_patition_label.txt").is_file():
            found.append("official")
        if (emo / "train_label.txt").is_file() and (emo / "test_label.txt").is_file():
            found.append("split_files")
        if _index_dir(root) is not None:
            found.append("index_lists")
        kinds = _folder_kinds(root)
        found += [k for k in ("named_folders", "numeric_folders") if k in kinds]
        return found

    def open(self, root: Path | None, layout: str, options: dict[str, Any]) -> Dataset:
        root = Path(root)
        notes: list[str] = []
        if layout in ("official", "split_files"):
            rows = _read_label_lists(root, layout)
            folder = _image_folder(root, options["images"])
            splits = {s: _list_split(self.name, s, root, folder, options["images"], r)
                      for s, r in rows.items()}
            notes.append(f"images from {folder}/")
        elif layout == "index_lists":
            splits = _open_index(self.name, root, notes)
        else:
            splits = _open_folders(self.name, root, layout == "numeric_folders",
                                   options["label_order"], notes)
        return Dataset(name=self.name, root=root, layout=layout, classes=BASIC7,
                       splits=splits, notes=notes)


def _raf_label(value: str, path: Path, line: int) -> int:
    code = F.parse_int(value, path, line, "label")
    if not 1 <= code <= 7:
        raise DataError(path, f"label {code} is not a RAF-DB class (1-7)", line)
    return indices(RAF_ORDER)[code - 1]


def _read_label_lists(root: Path, layout: str) -> dict[str, list]:
    """{split: [(name, canonical label, list file, line)]} from the `name label` lists."""
    emo = root / "EmoLabel"
    files = ({"": emo / "list_patition_label.txt"} if layout == "official" else
             {"train": emo / "train_label.txt", "test": emo / "test_label.txt"})
    out: dict[str, list] = {"train": [], "test": []}
    for split, path in files.items():
        for n, (name, label) in F.read_rows(path, 2, "<image name> <label 1-7>"):
            name = F.safe_relpath(root, name, path, n)
            part = split
            if not part:  # the official file holds both splits, told apart by the name's prefix
                part = next((s for s in ("train", "test") if name.startswith(s + "_")), None)
                if part is None:
                    raise DataError(path, f"image name {name!r} starts with neither train_ "
                                          f"nor test_", n)
            out[part].append((name, _raf_label(label, path, n), path, n))
    for rows in out.values():
        F.no_duplicates([r[0] for r in rows], rows[0][2] if rows else emo,
                        [r[3] for r in rows])
    return out


def _image_folder(root: Path, images: str) -> str:
    if images not in _IMAGES:
        raise unknown_name("value of option images", images, _IMAGES)
    folder = _IMAGES[images]
    if not (root / folder).is_dir():
        other = "original" if images == "aligned" else "aligned"
        hint = (f"; pass -o images={other} to read {_IMAGES[other]}/"
                if (root / _IMAGES[other]).is_dir() else "")
        raise DataError(root / folder, f"image folder missing{hint}")
    return folder


def _list_split(dataset, split, root, folder, images, rows):
    listing = F.Listing(root)
    ids = []
    for name, _, path, n in rows:
        # The aligned crops are named after the list entry with "_aligned" before the extension.
        file = f"{posixpath.splitext(name)[0]}_aligned.jpg" if images == "aligned" else name
        rel = F.safe_relpath(root, file, path, n, under=folder)
        listing.require(rel, path, n)
        ids.append(rel)
    return F.make_split(dataset, split, root, ids, [r[1] for r in rows], BASIC7)


def _index_dir(root: Path) -> Path | None:
    for d in _INDEX_DIRS:
        if all((root / d / f).is_file() for f in _INDEX_NAMES):
            return root / d
    return None


def _open_index(dataset: str, root: Path, notes: list[str]) -> dict:
    folder = _index_dir(root)
    if folder is None:
        raise DataError(root, f"index lists not found ({', '.join(_INDEX_NAMES)})")
    images, labels, split = (folder / f for f in _INDEX_NAMES)
    rows = F.read_index_lists(images, labels, split)
    rels = [F.safe_relpath(root, r.name, images, r.name_line) for r in rows]
    listing = F.Listing(root)
    # README and lists of UA-FER disagree on the image folder: take the first that holds the
    # first listed image, then require every image there.
    image_dir = next((d for d in _INDEX_IMAGE_DIRS
                      if rels and listing.exists(posixpath.join(d, rels[0]))), _INDEX_IMAGE_DIRS[0])
    notes.append(f"images from {image_dir or '.'}/; labels in RAF-DB's 1-based order")
    out = {}
    for part, flag in (("train", True), ("test", False)):
        sel = [(r, rel) for r, rel in zip(rows, rels) if r.train == flag]
        ids = [posixpath.join(image_dir, rel) for _, rel in sel]
        for (r, _), rel in zip(sel, ids):
            listing.require(rel, images, r.name_line)
        F.no_duplicates(ids, images, [r.name_line for r, _ in sel])
        labs = [_raf_label(r.label, labels, r.label_line) for r, _ in sel]
        out[part] = F.make_split(dataset, part, root, ids, labs, BASIC7)
    return out


def _folder_kinds(root: Path) -> set[str]:
    try:
        train, test, _ = F.split_roles([d.name for d in F.subdirs(root)], root)
    except DataError:  # two folders claim one role: open() reports it if this layout is chosen
        return set()
    if train is None or test is None:
        return set()
    kinds = set()
    for d in F.subdirs(root / train):
        kinds.add("numeric_folders" if d.name.isdigit() else
                  "named_folders" if canonical(d.name) else "")
    return kinds - {""}


def _open_folders(dataset, root, numeric, order, notes) -> dict:
    train, test, _ = F.split_roles([d.name for d in F.subdirs(root)], root)
    if train is None or test is None:
        raise DataError(root, "expected train/ and test/ folders of class folders")
    dirs = {part: F.subdirs(root / name) for part, name in (("train", train), ("test", test))}
    if test != "test":
        notes.append(f"{test}/ serves as the test split")
    if numeric:
        table = _numeric_table(root / train, [d for ds in dirs.values() for d in ds], order)
        notes.append(f"numeric class folders read in the {order or 'raf'} order")
    out = {}
    for part, classdirs in dirs.items():
        ids, labs = [], []
        for d in classdirs:
            label = table[d.name] if numeric else F.folder_class(d, BASIC7)
            files = F.image_files(root, d)
            ids += files
            labs += [label] * len(files)
        out[part] = F.make_split(dataset, part, root, ids, labs, BASIC7)
    return out


def _numeric_table(where: Path, dirs: list[Path], order: str) -> dict[str, int]:
    """{folder name: canonical label} for numeric class folders in the chosen order."""
    if order and order not in LABEL_ORDERS:
        raise unknown_name("label order", order, LABEL_ORDERS)
    for d in dirs:
        if not d.name.isdigit() or not 0 <= int(d.name) <= 7 or d.name != str(int(d.name)):
            raise DataError(d, f"class folder {d.name!r} is not a number 0..7")
    codes = {int(d.name) for d in dirs}
    zero, seven = 0 in codes, 7 in codes
    if zero and seven:
        raise DataError(where, "numeric class folders run from 0 to 7: eight folders for "
                               "RAF-DB's seven classes")
    choices = "pass --label-order raf0 or --label-order diversified"
    if not order:
        if zero:
            raise DataError(where, f"numeric class folders 0..6 exist in two orders: {choices}")
        if not seven:
            raise DataError(where, "numeric class folders hold neither 0 nor 7, so they may be "
                                   f"0..6 or 1..7: pass --label-order raf (1..7), or {choices}")
        order = "raf"
    if order == "raf":
        if zero:
            raise DataError(where, f"--label-order raf reads folders 1..7, but 0 exists: "
                                   f"{choices}")
        names = dict(zip(range(1, 8), RAF_ORDER))
    else:
        if seven:
            raise DataError(where, f"--label-order {order} reads folders 0..6, but 7 exists")
        names = dict(enumerate(ZERO_BASED[order]))
    table = indices(names[c] for c in sorted(codes))
    return {str(c): t for c, t in zip(sorted(codes), table)}
