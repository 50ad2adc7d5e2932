"""FER2013 (Goodfellow et al., ICML 2013 challenge): the image-folder export or the original CSV.

Splits follow the challenge: Training → `train`, PublicTest → `val` (the customary
validation split), PrivateTest → `test`; `test_all` (PublicTest + PrivateTest) is
what the image-folder export calls `test/`, so `data check` can show its counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..labels import BASIC7, CLASSES, canonical
from . import _files as F
from .base import Dataset, DatasetAdapter
from .samples import ArraySource, FileSource, Samples

CSV_NAME = "fer2013.csv"
SIDE = 48
# The native order of the `emotion` column, given by name and mapped by name.
NATIVE = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NATIVE_TO_CANONICAL = np.asarray([CLASSES.index(canonical(n)) for n in NATIVE], dtype=np.int64)
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
# In the image-folder export the file name keeps the Usage of the CSV row it came from.
PREFIX = {"Training_": "train", "PublicTest_": "val", "PrivateTest_": "test"}
SPLIT_ORDER = ("train", "val", "test")


class FER2013(DatasetAdapter):
    name = "fer2013"
    description = "FER2013: 35,887 grey 48x48 faces, 7 classes (Training/PublicTest/PrivateTest)"
    layouts = {
        "folders": "train/<class>/Training_*.jpg and test/<class>/{PublicTest,PrivateTest}_*.jpg",
        "csv": "fer2013.csv with columns emotion,pixels,Usage (the original challenge file)",
    }
    options: dict = {}
    grey = True
    # A noise file with integer labels uses the challenge's emotion codes.
    native_labels = {i: canonical(n) for i, n in enumerate(NATIVE)}
    same_faces_as = ("ferplus",)  # FERPlus relabelled these very faces
    # The challenge's fer2013.csv (Goodfellow et al., ICONIP 2013, "Challenges in
    # Representation Learning"): Training 28,709 rows, PublicTest and PrivateTest 3,589
    # each; per class as the file's emotion column counts them.
    official_counts = {
        "source": "fer2013.csv of the ICML 2013 challenge",
        "splits": {
            "train": {"total": 28709, "classes": {
                "anger": 3995, "disgust": 436, "fear": 4097, "happiness": 7215,
                "neutral": 4965, "sadness": 4830, "surprise": 3171}},
            "val": {"total": 3589},
            "test": {"total": 3589},
            "test_all": {"total": 7178, "classes": {
                "anger": 958, "disgust": 111, "fear": 1024, "happiness": 1774,
                "neutral": 1233, "sadness": 1247, "surprise": 831}},
        },
    }

    def detect(self, root: Path) -> list[str]:
        found = []
        if F.has_class_folder(root / "train") and (root / "test").is_dir():
            found.append("folders")
        if (root / CSV_NAME).is_file():
            found.append("csv")
        return found

    def open(self, root: Path, layout: str, options: dict) -> Dataset:
        if layout == "folders":
            splits, notes = _open_folders(root)
        else:
            splits, notes = _open_csv(root / CSV_NAME)
        return _dataset(root, layout, splits, notes)


def _dataset(root, layout, parts, notes) -> Dataset:
    """Assemble the Dataset; `val` exists only where PublicTest images were found."""
    splits = {}
    for split in SPLIT_ORDER:
        if split in parts and len(parts[split][0]):
            ids, source, labels = parts[split]
            splits[split] = Samples(dataset="fer2013", split=split, ids=tuple(ids), source=source,
                                    labels=np.asarray(labels, dtype=np.int64), classes=BASIC7)
    for split in ("train", "test"):
        if split not in splits:
            raise DataError(root, f"no {split} images found (layout {layout})")
    has_val = "val" in splits
    return Dataset(
        name="fer2013", root=root, layout=layout, classes=BASIC7, splits=splits,
        train="train", test="test", val="val" if has_val else None,
        combined={"test_all": ("val", "test")} if has_val else {}, notes=notes,
    )


def _open_folders(root: Path):
    """Read the image-folder export; the file-name prefix, not the folder, gives the split.

    The export puts PublicTest and PrivateTest together under `test/`; only the
    prefix separates validation from test. A file without a known prefix (a user's
    own export) falls back to its top folder, and a note says how many did.
    """
    items = F.scan_class_folders(root, "train") + F.scan_class_folders(root, "test")
    parts = {s: ([], [], []) for s in SPLIT_ORDER}
    unprefixed = 0
    for rel, label in items:
        top, fname = rel.split("/", 1)[0], rel.rsplit("/", 1)[-1]
        split = next((s for p, s in PREFIX.items() if fname.startswith(p)), None)
        if split is None:
            split, unprefixed = top, unprefixed + 1
        ids, _, labels = parts[split]
        ids.append(rel)
        labels.append(label)
    out = {s: (ids, FileSource(root, ids), labels) for s, (ids, _, labels) in parts.items()}
    notes = ["labels from the class folder names; split from the file-name prefix "
             "(Training_ → train, PublicTest_ → val, PrivateTest_ → test)"]
    if unprefixed:
        notes.append(f"{unprefixed} image(s) without a Training_/PublicTest_/PrivateTest_ "
                     f"prefix were assigned by their folder (train/ or test/)")
    if not parts["val"][0]:
        notes.append("no PublicTest_ images: there is no validation split")
    return out, notes


def _open_csv(path: Path):
    """Read fer2013.csv: one face per row, 2,304 grey pixels, native labels mapped by name."""
    rows = read_fer2013_csv(path)
    stamp = F.file_stamp(path)
    out = {}
    for split in SPLIT_ORDER:
        index = np.flatnonzero(rows.splits == split)
        ids = [f"{CSV_NAME}#{i}" for i in index]
        source = ArraySource(rows.images[index], sizes=rows.sizes[index], stamp=f"{stamp}:{split}")
        out[split] = (ids, source, NATIVE_TO_CANONICAL[rows.emotions[index]])
    return out, [f"labels from the emotion column of {CSV_NAME} (native order 0 angry … "
                 f"6 neutral, mapped by name); ids are {CSV_NAME}#<row>, row counted from 0 "
                 f"after the header"]


@dataclass(frozen=True)
class Fer2013Rows:
    """The parsed rows of fer2013.csv, in file order (FERPlus's fer2013new.csv follows it)."""

    images: np.ndarray    # uint8 [N, 48, 48]
    emotions: np.ndarray  # native 0..6
    splits: np.ndarray    # "train" / "val" / "test" from Usage
    sizes: np.ndarray     # bytes of each pixels cell (for the fingerprint)
    lines: np.ndarray     # line of each row in the file (for messages)

    def __len__(self):
        return len(self.images)


def read_fer2013_csv(path: Path) -> Fer2013Rows:
    """Parse fer2013.csv; DataError with file and line for a malformed row.

    Columns are found by header name (the Kaggle `icml_face_data.csv` variant pads
    them with spaces). `emotion` must be 0..6 and `Usage` one of Training,
    PublicTest, PrivateTest; each `pixels` cell holds 48x48 integers in 0..255.
    """
    rows = F.read_rows(path, header=True)
    _, header = next(rows)
    cols = F.header_index(header, ("emotion", "pixels", "Usage"), path)
    images, emotions, splits, sizes, lines = [], [], [], [], []
    for line, row in rows:
        emotion = row[cols["emotion"]].strip()
        if not emotion.isdigit() or int(emotion) >= len(NATIVE):
            raise DataError(path, f"emotion {F.shown(emotion)} is not one of "
                                  f"0..{len(NATIVE) - 1}", line)
        usage = row[cols["Usage"]].strip()
        if usage not in USAGE:
            raise DataError(path, f"unknown Usage {F.shown(usage)} "
                                  f"(expected {', '.join(USAGE)})", line)
        pixels = row[cols["pixels"]]
        images.append(F.parse_pixels(pixels, SIDE * SIDE, path, line).reshape(SIDE, SIDE))
        emotions.append(int(emotion))
        splits.append(USAGE[usage])
        sizes.append(len(pixels.encode()))
        lines.append(line)
    if not images:
        raise DataError(path, "no data rows after the header")
    return Fer2013Rows(np.stack(images), np.asarray(emotions, dtype=np.int64),
                       np.asarray(splits), np.asarray(sizes, dtype=np.int64),
                       np.asarray(lines, dtype=np.int64))
