"""AffectNet (manually annotated, 7 or 8 classes), with valence and arousal where files carry them.

AffectNet's test set is not public: every layout's held-out split is the official
validation set (500 images per class), which the papers report as "test".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..labels import BASIC7, CLASSES, canonical, indices
from . import _files as F
from .base import Dataset, DatasetAdapter

# Expression codes of the AffectNet CSVs; 8 none, 9 uncertain, 10 non-face are dropped.
NATIVE = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
DROPPED = {8: "none", 9: "uncertain", 10: "non-face"}
COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
           "facial_landmarks", "expression", "valence", "arousal")
_IMAGES = "Manually_Annotated_Images"
_CSV_DIRS = ("", "Manually_Annotated_file_lists")
_INDEX_DIR = "affectnet_info"
_INDEX_NAMES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")
_PRE_SPLITS = {"train": "Training_Labeled", "test": "Validation"}
# ESR's preprocessed AffectNet (siqueira-hc, model/utils/udata.py) names each file
# `<id>s<expression>s<valence*1000>s<arousal*1000>`, e.g. 0000000s7s-653s653.jpg.
_ESR_NAME = re.compile(r"^\d+s(\d{1,2})s(-?\d+)s(-?\d+)$")
# Otherwise valence and arousal (x1000) count only when tagged, e.g. 12345_v-250_a430.jpg;
# untagged trailing numbers are too easily an id or a frame number to be read as affect.
_TAG_V = re.compile(r"(?<![a-z])(?:v|val|valence)[=_]?(-?\d+)(?![\d])", re.I)
_TAG_A = re.compile(r"(?<![a-z])(?:a|aro|arousal)[=_]?(-?\d+)(?![\d])", re.I)
TEST_NOTE = ("AffectNet's test set is not public: the official validation set serves as "
             "the test split")


class AffectNet(DatasetAdapter):
    """AffectNet's manually annotated images from the official CSVs, index lists or ESR's export."""

    name = "affectnet"
    description = "AffectNet manually annotated (8 classes, or 7 without contempt)"
    layouts = {
        "official": f"{_IMAGES}/ + training.csv, validation.csv (at the root or in "
                    f"Manually_Annotated_file_lists/)",
        "index_lists": f"{_INDEX_DIR}/images.txt, image_class_labels.txt, train_test_split.txt "
                       f"(CEPrompt, UA-FER; _8cls variants for 8 classes)",
        "preprocessed": "Training_Labeled/ and Validation/ (ESR's export: "
                        "<id>s<expr>s<valence>s<arousal>.jpg, or class folders)",
    }
    options = {"classes": 8, "crop": True}
    native_labels = dict(enumerate(NATIVE))

    def detect(self, root: Path) -> list[str]:
        found = []
        if (root / _IMAGES).is_dir() and _csv(root, "training.csv") is not None:
            found.append("official")
        if (root / _INDEX_DIR / "images.txt").is_file() or \
                (root / _INDEX_DIR / "images_8cls.txt").is_file():
            found.append("index_lists")
        if all((root / d).is_dir() for d in _PRE_SPLITS.values()):
            found.append("preprocessed")
        return found

    def open(self, root: Path | None, layout: str, options: dict[str, Any]) -> Dataset:
        root, k = Path(root), options["classes"]
        if k not in (7, 8):
            raise ConfigError(f"option classes={k} of dataset affectnet: expected 7 or 8")
        classes = CLASSES if k == 8 else BASIC7
        notes = [TEST_NOTE]
        read = {"official": _open_official, "index_lists": _open_index,
                "preprocessed": _open_preprocessed}[layout]
        rows = read(root, options, notes)
        splits = {}
        for part, (ids, codes, boxes, va, where) in rows.items():
            keep = _keep(codes, k, part, notes)
            labels = np.asarray(indices(NATIVE), dtype=np.int64)[codes[keep]]
            extras = {}
            if va is not None and not np.isnan(va[keep]).any():
                extras = {"valence": va[keep, 0], "arousal": va[keep, 1]}
            elif va is not None and not np.isnan(va[keep]).all():
                notes.append(f"{part}: valence/arousal missing for some images, so left out")
            F.no_duplicates(ids, where)
            splits[part] = F.make_split(
                self.name, part, root, [ids[i] for i in np.flatnonzero(keep)], labels, classes,
                boxes=None if boxes is None else boxes[keep], extras=extras,
                label_extras=extras.keys())
        return Dataset(name=self.name, root=root, layout=layout, classes=classes,
                       splits=splits, notes=notes)


def _keep(codes: np.ndarray, k: int, part: str, notes: list[str]) -> np.ndarray:
    """Mask of samples kept for k classes; what was dropped is counted in the notes."""
    keep = codes < k
    dropped = [f"{int((codes == c).sum())} {DROPPED.get(c, 'contempt')}" for c in range(k, 11)
               if (codes == c).any()]
    if dropped:
        notes.append(f"{part}: dropped {', '.join(dropped)} (codes {k}-10)")
    return keep


def _code(value: str, path: Path, line: int | None) -> int:
    code = F.parse_int(value, path, line, "expression") if line is not None else int(value)
    if not 0 <= code <= 10:
        raise DataError(path, f"expression {code} is not an AffectNet code (0-10)", line)
    return code


def _csv(root: Path, name: str) -> Path | None:
    return next((root / d / name for d in _CSV_DIRS if (root / d / name).is_file()), None)


def _open_official(root: Path, options, notes) -> dict:
    out = {}
    listing = F.Listing(root)
    for part, name in (("train", "training.csv"), ("test", "validation.csv")):
        path = _csv(root, name)
        if path is None:
            raise DataError(root / name, f"not found (looked in the root and "
                                         f"{_CSV_DIRS[1]}/)")
        ids, codes, boxes, va = [], [], [], []
        for n, row in _csv_rows(path, notes):
            code = _code(row[6], path, n)
            rel = F.safe_relpath(root, row[0], path, n, under=_IMAGES)
            try:
                box = [int(float(x)) for x in row[1:5]]
                v, a = float(row[7]), float(row[8])
            except ValueError:
                raise DataError(path, "face box, valence and arousal must be numbers", n) from None
            if code < 8 and not (-1 <= v <= 1 and -1 <= a <= 1):
                raise DataError(path, f"valence {v} / arousal {a} outside [-1, 1]", n)
            listing.require(rel, path, n)
            ids.append(rel)
            codes.append(code)
            boxes.append(box)
            va.append((v, a))
        crop = np.asarray(boxes, dtype=np.int64).reshape(-1, 4) if options["crop"] else None
        out[part] = (ids, np.asarray(codes, dtype=np.int64), crop,
                     np.asarray(va, dtype=np.float32).reshape(-1, 2), path)
    notes.append("images cropped to the CSV face boxes" if options["crop"] else
                 "full frames (crop off): images not cropped to the face boxes")
    return out


def _csv_rows(path: Path, notes: list[str]):
    """(line, row) of an AffectNet CSV; a file without the header row is read in the usual order."""
    order = None
    for n, row in F.read_rows(path):
        if not "".join(row).strip():  # spreadsheet exports end in rows of bare commas
            continue
        if order is None:
            order = list(range(len(COLUMNS)))
            if row[0].strip() == COLUMNS[0]:
                head = [c.strip() for c in row]
                missing = [c for c in COLUMNS if c not in head]
                if missing:
                    raise DataError(path, f"header lacks {', '.join(missing)}", n)
                order = [head.index(c) for c in COLUMNS]
                continue
            notes.append(f"{path.name} has no header row: read as {','.join(COLUMNS)}")
        if len(row) <= max(order):
            raise DataError(path, f"{len(row)} columns, expected {len(COLUMNS)}", n)
        yield n, [row[i].strip() for i in order]


def _open_index(root: Path, options, notes) -> dict:
    folder = root / _INDEX_DIR
    # CEPrompt ships 8-class lists as *_8cls.txt beside the 7-class ones; prefer the set that
    # matches the classes asked for, and read the other where it is the only one.
    prefer = ("_8cls", "") if options["classes"] == 8 else ("", "_8cls")
    suffix = next((s for s in prefer if (folder / f"images{s}.txt").is_file()), "")
    images, labels, split = (folder / f.replace(".txt", f"{suffix}.txt") for f in _INDEX_NAMES)
    rows = F.read_index_lists(images, labels, split)
    notes.append(f"read {images.name}, {labels.name}, {split.name}; labels in AffectNet's "
                 f"0-based order (0 neutral ... 7 contempt), paths relative to the data root")
    listing = F.Listing(root)
    out = {}
    for part, flag in (("train", True), ("test", False)):
        sel = [r for r in rows if r.train == flag]
        ids = [F.safe_relpath(root, r.name, images, r.name_line) for r in sel]
        for r, rel in zip(sel, ids):
            listing.require(rel, images, r.name_line)
        codes = np.asarray([_code(r.label, labels, r.label_line) for r in sel], dtype=np.int64)
        out[part] = (ids, codes, None, None, images)
    if options["classes"] == 8 and not any((c[1] == 7).any() for c in out.values()):
        raise DataError(labels, "no contempt image (code 7): these are 7-class lists; "
                                "pass -o classes=7")
    return out


def _open_preprocessed(root: Path, options, notes) -> dict:
    out = {}
    for part, name in _PRE_SPLITS.items():
        ids, codes, va = [], [], []
        for rel in F.image_files(root, root / name):
            code, v, a = parse_name(root / rel)
            ids.append(rel)
            codes.append(code)
            va.append((v, a))
        out[part] = (ids, np.asarray(codes, dtype=np.int64), None,
                     np.asarray(va, dtype=np.float32).reshape(-1, 2), root / name)
    notes.append("valence/arousal read from file names (x1000): ESR's "
                 "<id>s<expr>s<valence>s<arousal> or tags v<int>, a<int>")
    return out


def parse_name(path: Path) -> tuple[int, float, float]:
    """(expression code, valence, arousal) of a preprocessed file; NaN where the name has none.

    ESR names carry all three; otherwise the class comes from the parent folder (a class
    name or an AffectNet code) and valence/arousal only from tags `v<int>`/`a<int>`.
    """
    m = _ESR_NAME.match(path.stem)
    if m:
        code, v, a = _code(m.group(1), path, None), int(m.group(2)), int(m.group(3))
    else:
        folder = path.parent.name
        name = canonical(folder)
        if name is not None:
            code = NATIVE.index(name)
        elif folder.isdigit():
            code = _code(folder, path.parent, None)
        else:
            raise DataError(path, f"class unknown: folder {folder!r} is neither a class name nor "
                                  f"an AffectNet code, and the name is not ESR's "
                                  f"<id>s<expr>s<valence>s<arousal>")
        mv, ma = _TAG_V.search(path.stem), _TAG_A.search(path.stem)
        if not (mv and ma):
            return code, float("nan"), float("nan")
        v, a = int(mv.group(1)), int(ma.group(1))
    if code < 8 and not (-1000 <= v <= 1000 and -1000 <= a <= 1000):
        raise DataError(path, f"valence {v} / arousal {a} (x1000) outside [-1000, 1000]")
    return code, v / 1000.0, a / 1000.0
