"""Which FER2013 label each FERPlus training face had: the correspondence behind `realnoise`.

FERPlus relabelled the FER2013 faces, so every FERPlus training face is a FER2013
Training image with its original label. Two ways to find it:

- rows: `fer2013.csv` (the original challenge file) and FERPlus's `fer2013new.csv`
  share their row order, so a face's image name gives its row;
- content: with only the image-folder export of FER2013 (JPEG), the face is found by
  its pixels (`ferbench.data.match`).

Both routes then apply one rule, so they give the same training set: a face is
*matched* when every FER2013 Training image identical to it (within the match
tolerance) carries one label; *ambiguous* when such duplicates disagree (FER2013
holds identical images with different labels); *unmatched* when none is found,
or, on the rows route, when its own row holds other pixels. The match is computed
once per pair of datasets and cached.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.cache import cache_root, load_cached
from ..data.match import TOLERANCE, same_images
from ..errors import ConfigError, DataError
from ..labels import CLASSES
from .base import Dataset, open_dataset

STATUS = ("matched", "ambiguous", "unmatched")
MATCHED, AMBIGUOUS, UNMATCHED = range(3)
_VERSION = 1


@dataclass(frozen=True)
class Fer2013Labels:
    """Per FERPlus training face (in the dataset's order): its FER2013 label and match status."""

    route: str               # "rows" or "content"
    source: str              # what was read, for the record
    original: np.ndarray     # canonical class index, -1 where not matched
    status: np.ndarray       # int8, index into STATUS
    reasons: dict            # counts behind the ambiguous and unmatched faces

    # Below this share of matched faces the two copies are not the same data.
    MIN_MATCHED = 0.5

    @property
    def matched(self) -> np.ndarray:
        return self.status == MATCHED

    def require_same_faces(self) -> None:
        """Raise where too few faces match for the two copies to be the same data."""
        n, found = len(self.status), int(self.matched.sum())
        if found < self.MIN_MATCHED * n:
            raise DataError(self.source, f"only {found:,} of {n:,} FERPlus training faces "
                                         f"match a FER2013 Training image: not the same faces")

    def report(self, reference: np.ndarray, classes=CLASSES) -> dict:
        """Match counts and how often FER2013's label differs from the reference, per class.

        `reference` holds canonical labels (the FERPlus majority) in the same order.
        """
        m = self.matched
        ref, orig = np.asarray(reference)[m], self.original[m]
        per_class = {}
        for c in classes:
            i = CLASSES.index(c)
            n = int((ref == i).sum())
            d = int(((ref == i) & (orig != i)).sum())
            per_class[c] = {"faces": n, "disagree": d, "rate": round(d / n, 6) if n else None}
        index = np.full(len(CLASSES), -1, dtype=np.int64)
        index[[CLASSES.index(c) for c in classes]] = np.arange(len(classes))
        transition = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(transition, (index[ref], index[orig]), 1)
        disagree = int((ref != orig).sum())
        return {
            "route": self.route, "source": self.source, "faces": int(len(self.status)),
            **{s: int((self.status == k).sum()) for k, s in enumerate(STATUS)},
            "reasons": dict(self.reasons), "disagree": disagree,
            "disagreement_rate": round(disagree / max(1, int(m.sum())), 6),
            "per_class": per_class, "classes": list(classes),
            "transition": transition.tolist(),
        }


def locate_fer2013(ferplus: Dataset, fer2013_root) -> tuple[Path, str]:
    """(root, layout) of the FER2013 copy to match against; `csv` means the rows route."""
    if fer2013_root is None:
        if ferplus.root is not None and (Path(ferplus.root) / "fer2013.csv").is_file():
            return Path(ferplus.root), "csv"
        raise ConfigError("FER2013's original labels are needed: pass --fer2013-root DIR, a "
                          "folder holding fer2013.csv or the FER2013 image-folder export")
    root = Path(fer2013_root).expanduser()
    if root.is_file():
        if root.name != "fer2013.csv":
            raise DataError(root, "expected fer2013.csv or a folder holding FER2013")
        return root.parent, "csv"
    if not root.is_dir():
        raise DataError(root, "FER2013 root does not exist")
    if (root / "fer2013.csv").is_file():
        return root, "csv"
    return root, "folders"


def fer2013_labels(ferplus: Dataset, fer2013_root=None, tolerance: float = TOLERANCE,
                   show_progress: bool | None = None) -> Fer2013Labels:
    """The FER2013 label of every FERPlus training face, computed once and then cached."""
    from ..plugins import registry

    if ferplus.name != "ferplus":
        raise ConfigError(f"FER2013 labels are matched to FERPlus faces, not to {ferplus.name}")
    root, layout = locate_fer2013(ferplus, fer2013_root)
    fer = open_dataset(registry().get("datasets", "fer2013"), root, layout)
    train, pool = ferplus.split(ferplus.train), fer.split(fer.train)
    route = "rows" if layout == "csv" else "content"
    source = f"{root / 'fer2013.csv' if route == 'rows' else root} ({fer.layout})"
    stamp = f"{train.source.stamp()}|{pool.source.stamp()}"
    if route == "rows":
        rows, new_csv_stamp = _rows_of(ferplus, train)
        stamp += f"|{new_csv_stamp}"
    key = hashlib.sha256(json.dumps([_VERSION, route, float(tolerance), train.fingerprint,
                                     pool.fingerprint]).encode()).hexdigest()[:20]
    path = cache_root() / "fer2013-match" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                if str(z["stamp"]) == stamp:
                    return Fer2013Labels(route, source, z["original"], z["status"],
                                         json.loads(str(z["reasons"])))
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is recomputed
    a = load_cached(train, 48, "L", show_progress=show_progress).images
    b = load_cached(pool, 48, "L", show_progress=show_progress).images
    candidates = same_images(a, b, tolerance)
    pool_labels = np.asarray(pool.labels)
    original = np.full(len(train), -1, dtype=np.int64)
    status = np.full(len(train), UNMATCHED, dtype=np.int8)
    reasons = {"duplicates_conflicting": 0, "duplicates_agreeing": 0, "not_found": 0}
    if route == "rows":
        reasons.update({"name_not_in_fer2013new": 0, "row_pixels_differ": 0})
        row_index = {int(sid.rsplit("#", 1)[1]): i for i, sid in enumerate(pool.ids)}
    for i, cand in enumerate(candidates):
        if route == "rows":
            if rows[i] is None:
                reasons["name_not_in_fer2013new"] += 1
                continue
            if not any(row_index.get(r, -1) in cand for r in rows[i]):
                reasons["row_pixels_differ"] += 1
                continue
        if not len(cand):
            reasons["not_found"] += 1
            continue
        labels = np.unique(pool_labels[cand])
        if len(labels) > 1:
            status[i] = AMBIGUOUS
            reasons["duplicates_conflicting"] += 1
            continue
        status[i], original[i] = MATCHED, labels[0]
        reasons["duplicates_agreeing"] += int(len(cand) > 1)
    from ..results import write_npz

    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, {"original": original, "status": status, "stamp": np.asarray(stamp),
                     "reasons": np.asarray(json.dumps(reasons))})
    return Fer2013Labels(route, source, original, status, reasons)


def _rows_of(ferplus: Dataset, train) -> tuple[list[list[int] | None], str]:
    """fer2013.csv rows of each FERPlus training face, by name through fer2013new.csv, and
    the stamp of what was read."""
    from . import _files
    from .ferplus import NEW_CSV, read_new_csv

    if all(sid.startswith("fer2013.csv#") for sid in train.ids):  # FERPlus read from the CSVs
        return [[int(sid.rsplit("#", 1)[1])] for sid in train.ids], ""
    new_csv = Path(ferplus.root) / NEW_CSV
    if not new_csv.is_file():
        raise DataError(new_csv, "matching FERPlus to fer2013.csv by row needs FERPlus's "
                                 "fer2013new.csv (same row order) in the FERPlus root")
    by_name: dict[str, list[int]] = {}
    for row, (_, split, name, _) in enumerate(read_new_csv(new_csv)):
        if name and split == "train":
            by_name.setdefault(name, []).append(row)
    return ([by_name.get(sid.rsplit("/", 1)[-1]) for sid in train.ids],
            _files.file_stamp(new_csv))
