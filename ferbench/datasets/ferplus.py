"""FERPlus (Barsoum et al., ICMI 2016): the FER2013 faces relabelled by ten annotators each.

Votes are read from `label.csv` (one per split folder, as Microsoft's reference
trainer reads them) or from `fer2013new.csv`; the two disagree on some faces, so
every Dataset says in its notes which one was read. A face's label comes from its
votes through a scheme (`majority` by default, as the reference trainer); the raw
votes stay with each face as the label-carrying extra `votes`, float32 [N, 10] in
the file's column order: the eight emotions (which is the canonical order), then
unknown and NF (not a face).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import DataError, unknown_name
from ..labels import CLASSES, canonical
from . import _files as F
from .base import Dataset, DatasetAdapter
from .fer2013 import USAGE, read_fer2013_csv
from .samples import ArraySource, FileSource, Samples

NEW_CSV, FER_CSV = "fer2013new.csv", "fer2013.csv"
VOTE_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
              "contempt", "unknown", "NF")
N_EMOTIONS = 8
# Vote column → canonical class, by name (FERPlus's order happens to be the canonical one).
VOTE_TO_CANONICAL = np.asarray([CLASSES.index(canonical(n)) for n in VOTE_NAMES[:N_EMOTIONS]])
# (role, folder names): Microsoft's generator writes FER2013Train etc.; some copies
# of the Diversified/ESR layout shorten them to Train/Valid/Test.
SPLITS = (("train", ("FER2013Train", "Train")), ("val", ("FER2013Valid", "Valid")),
          ("test", ("FER2013Test", "Test")))
LABEL_SOURCES = ("label.csv", "fer2013new")
SCHEMES = ("majority", "plurality")


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """Canonical labels by the reference majority scheme; -1 for faces it leaves out.

    microsoft/FERPlus `ferplus.py` (`_process_data`, mode "majority"): every
    column with at most one vote is zeroed as an outlier (unknown and NF too);
    the top column is kept when it holds more than half of the remaining votes;
    a face without such a majority, or whose top is unknown/NF, is dropped.
    """
    v = np.asarray(votes, dtype=np.float64).copy()
    v[v < 1.0 + sys.float_info.epsilon] = 0.0
    top = v.argmax(axis=1)
    keep = (v.max(axis=1) > 0.5 * v.sum(axis=1)) & (top < N_EMOTIONS)
    return np.where(keep, VOTE_TO_CANONICAL[np.minimum(top, N_EMOTIONS - 1)], -1)


def plurality_labels(votes: np.ndarray) -> np.ndarray:
    """Labels by plurality of the raw votes; -1 for a tie, no votes or unknown/NF on top."""
    v = np.asarray(votes, dtype=np.float64)
    top, best = v.argmax(axis=1), v.max(axis=1)
    keep = ((v == best[:, None]).sum(axis=1) == 1) & (best > 0) & (top < N_EMOTIONS)
    return np.where(keep, VOTE_TO_CANONICAL[np.minimum(top, N_EMOTIONS - 1)], -1)


class FERPlus(DatasetAdapter):
    name = "ferplus"
    description = "FERPlus: FER2013 faces with ten annotators' votes, 8 classes (Train/Valid/Test)"
    layouts = {
        "official": "FER2013Train/, FER2013Valid/, FER2013Test/, each with PNGs and label.csv",
        "diversified": "Dataset/Images/<split>/ and Dataset/Labels/<split>/label.csv "
                       "(split FER2013Train or Train, ...; as the ESR/Diversified code reads it)",
        "csv": "fer2013new.csv beside fer2013.csv (pixels from fer2013.csv, by row order)",
    }
    options = {"labels": "label.csv", "scheme": "majority"}
    grey = True
    # Integer labels are vote-column indices, as the reference trainer's argmax yields them.
    native_labels = {i: CLASSES[c] for i, c in enumerate(VOTE_TO_CANONICAL)}
    same_faces_as = ("fer2013",)  # FER2013's faces, relabelled by ten annotators each
    # microsoft/FERPlus: the label.csv files its generator writes (Train 28,558, Valid 3,579,
    # Test 3,573 rows) and the faces its reference trainer keeps from them under the
    # majority scheme (ferplus.py `_process_data`), per class. The rows read are the count
    # each split's note gives (`rows_note`).
    official_counts = {
        "source": "microsoft/FERPlus label.csv, majority scheme",
        "applies": {"layouts": ["official", "diversified"],
                    "options": {"labels": "label.csv", "scheme": "majority"}},
        "rows_note": r"^{split}: the \w+ scheme kept [\d,]+ of (?P<rows>[\d,]+) faces",
        "splits": {
            "train": {"total": 25045, "rows": 28558, "classes": {
                "neutral": 8733, "happiness": 7284, "surprise": 3136, "sadness": 3022,
                "anger": 2098, "disgust": 116, "fear": 536, "contempt": 120}},
            "val": {"total": 3191, "rows": 3579, "classes": {
                "neutral": 1180, "happiness": 862, "surprise": 411, "sadness": 348,
                "anger": 289, "disgust": 25, "fear": 60, "contempt": 16}},
            "test": {"total": 3137, "rows": 3573, "classes": {
                "neutral": 1083, "happiness": 892, "surprise": 394, "sadness": 382,
                "anger": 269, "disgust": 16, "fear": 86, "contempt": 15}},
        },
    }

    def original_labels(self, ds: Dataset, root=None, show_progress=None):
        """FER2013's own label of each training face, found in the FER2013 copy at `root`."""
        # The match pulls in torch: imported when asked for, not when the plugin loads.
        from .fer2013_match import fer2013_labels

        return fer2013_labels(ds, root, show_progress=show_progress)

    def detect(self, root: Path) -> list[str]:
        found = []
        if any((root / names[0] / "label.csv").is_file() for _, names in SPLITS):
            found.append("official")
        if _diversified_base(root) is not None:
            found.append("diversified")
        if (root / NEW_CSV).is_file() and (root / FER_CSV).is_file():
            found.append("csv")
        return found

    def open(self, root: Path, layout: str, options: dict) -> Dataset:
        labels, scheme = options["labels"], options["scheme"]
        labels = "fer2013new" if labels == NEW_CSV else labels  # the file name works too
        if labels not in LABEL_SOURCES:
            raise unknown_name("value of ferplus option labels", labels, LABEL_SOURCES)
        if scheme not in SCHEMES:
            raise unknown_name("value of ferplus option scheme", scheme, SCHEMES)
        if layout == "csv":
            parts, notes = _open_csv(root)
        else:
            parts, notes = _open_folders(root, layout, labels)
        to_label = majority_labels if scheme == "majority" else plurality_labels
        splits = {}
        for role, (ids, votes, source_of) in parts.items():
            y = to_label(votes)
            keep = np.flatnonzero(y >= 0)
            notes.append(f"{role}: the {scheme} scheme kept {len(keep):,} of {len(y):,} faces "
                         f"({len(y) - len(keep):,} left out: no {scheme} or unknown/NF on top)")
            splits[role] = Samples(
                dataset="ferplus", split=role, ids=tuple(ids[i] for i in keep),
                source=source_of(keep),
                labels=y[keep].astype(np.int64), classes=CLASSES,
                extras={"votes": votes[keep]}, label_extras=frozenset({"votes"}),
            )
        return Dataset(name="ferplus", root=root, layout=layout, classes=CLASSES, splits=splits,
                       train="train", test="test", val="val", notes=notes)


def _diversified_base(root: Path) -> str | None:
    """The folder holding Images/ and Labels/: `Dataset` under the root, or the root itself."""
    for base in ("Dataset", ""):
        labels = root / base / "Labels" if base else root / "Labels"
        if any((labels / n / "label.csv").is_file() for _, names in SPLITS for n in names):
            return base
    return None


def _split_dirs(root: Path, layout: str):
    """(role, image folder, label file) per split, relative to the root; DataError if absent."""
    if layout == "official":
        return [(role, names[0], Path(names[0]) / "label.csv") for role, names in SPLITS]
    base = _diversified_base(root)
    base = "Dataset" if base is None else base
    prefix = f"{base}/" if base else ""
    out = []
    for role, names in SPLITS:
        name = next((n for n in names if (root / f"{prefix}Labels/{n}/label.csv").is_file()),
                    names[0])
        out.append((role, f"{prefix}Images/{name}", Path(f"{prefix}Labels/{name}/label.csv")))
    return out


def _open_folders(root: Path, layout: str, source: str):
    """Images from the split folders; votes from each label.csv or, by name, from fer2013new.csv."""
    dirs = _split_dirs(root, layout)
    if source == "fer2013new":
        by_role, notes = _new_csv_by_name(root / NEW_CSV)
        notes.insert(0, f"labels: votes from {NEW_CSV} at the root, matched by image name "
                        f"(its Usage gives the split); images from the split folders")
    else:
        by_role = {role: read_label_csv(root / label) for role, _, label in dirs}
        files = ", ".join(label.as_posix() for _, _, label in dirs)
        notes = [f"labels: votes from each split's label.csv ({files}), "
                 f"as the reference trainer reads them"]
    parts, listing = {}, F.Listing(root)
    for role, folder, label in dirs:
        names, votes, lines = by_role[role]
        if not (root / folder).is_dir():
            raise DataError(root / folder, "image folder not found")
        label_file = root / (NEW_CSV if source == "fer2013new" else label)
        # FileSource would fail later, at the first stat or decode; checking here (one
        # directory read per folder) gives the user the label line at fault.
        for name, line in zip(names, lines):
            if not listing.exists(f"{folder}/{name}"):
                raise DataError(label_file, f"lists {folder}/{name}, which does not exist", line)
        ids = [f"{folder}/{n}" for n in names]
        parts[role] = (ids, votes, lambda keep, ids=ids: FileSource(root, [ids[i] for i in keep]))
    return parts, notes


def read_label_csv(path: Path):
    """(names, votes float32 [N, 10], lines) of a header-less FERPlus label.csv.

    A row is `name,"(x, y, w, h)",` then ten vote counts. The box is always the whole
    48x48 image in FERPlus and its convention differs between readers, so it is not used.
    """
    names, votes, lines, seen = [], [], [], {}
    for line, row in F.read_rows(path, ncols=2 + len(VOTE_NAMES)):
        name = F.safe_relpath(None, row[0], path, line)
        if name in seen:
            raise DataError(path, f"{name} is listed twice (first on line {seen[name]})", line)
        seen[name] = line
        votes.append(F.parse_floats(row[2:], path, line))
        names.append(name)
        lines.append(line)
    if not names:
        raise DataError(path, "no rows")
    return names, np.asarray(votes, dtype=np.float32).reshape(-1, len(VOTE_NAMES)), lines


def read_new_csv(path: Path):
    """Rows of fer2013new.csv in file order: (line, split, image name or '', votes)."""
    rows = F.read_rows(path, header=True)
    _, header = next(rows)
    cols = F.header_index(header, ("Usage", "Image name") + VOTE_NAMES, path)
    vote_cols = [cols[n] for n in VOTE_NAMES]
    out = []
    for line, row in rows:
        usage = row[cols["Usage"]].strip()
        if usage not in USAGE:
            raise DataError(path, f"unknown Usage {F.shown(usage)} "
                                  f"(expected {', '.join(USAGE)})", line)
        name = row[cols["Image name"]].strip()
        if name:
            name = F.safe_relpath(None, name, path, line)
        votes = F.parse_floats([row[c] for c in vote_cols], path, line)
        out.append((line, USAGE[usage], name, votes))
    return out


def _new_csv_by_name(path: Path):
    """{role: (names, votes, lines)} from fer2013new.csv, one entry per named face.

    Rows without an image name are not faces and are skipped. A few names occur
    twice; the first row is kept (it is the one label.csv agrees with), and names
    whose two rows disagree are reported in the notes.
    """
    by_role = {role: ([], [], []) for role, _ in SPLITS}
    first, conflicts, unnamed = {}, [], 0
    for line, role, name, votes in read_new_csv(path):
        if not name:
            unnamed += 1
            continue
        if name in first:
            prev_role, prev_votes = first[name]
            if prev_role != role or prev_votes != votes:
                conflicts.append(name)
            continue
        first[name] = (role, votes)
        names, vs, lines = by_role[role]
        names.append(name)
        vs.append(votes)
        lines.append(line)
    out = {role: (n, np.asarray(v, dtype=np.float32).reshape(-1, len(VOTE_NAMES)), ln)
           for role, (n, v, ln) in by_role.items()}
    notes = [f"{NEW_CSV}: {unnamed} row(s) without an image name (not faces) skipped"]
    if conflicts:
        notes.append(f"{NEW_CSV}: image name(s) listed twice with different votes, first row "
                     f"kept: {', '.join(sorted(conflicts))}")
    return out, notes


def _open_csv(root: Path):
    """Pixels from fer2013.csv and votes from fer2013new.csv, matched by row order."""
    fer, new_path = read_fer2013_csv(root / FER_CSV), root / NEW_CSV
    rows = read_new_csv(new_path)
    if len(rows) != len(fer):
        raise DataError(new_path, f"has {len(rows)} data rows but {FER_CSV} has {len(fer)}: "
                                  f"the two files must be row-aligned")
    for i, (line, role, _, _) in enumerate(rows):
        if role != fer.splits[i]:
            raise DataError(new_path, f"Usage says {role} but line {fer.lines[i]} of {FER_CSV} "
                                      f"says {fer.splits[i]}: the files are not row-aligned", line)
    stamp = f"{F.file_stamp(root / FER_CSV)}:{F.file_stamp(new_path)}"
    parts = {}
    for role, _ in SPLITS:
        index = np.asarray([i for i, r in enumerate(rows) if r[1] == role and r[2]], dtype=np.int64)
        votes = np.asarray([rows[i][3] for i in index], dtype=np.float32)
        votes = votes.reshape(-1, len(VOTE_NAMES))
        parts[role] = ([f"{FER_CSV}#{i}" for i in index], votes,
                       lambda keep, index=index, role=role: ArraySource(
                           fer.images[index[keep]], sizes=fer.sizes[index[keep]],
                           stamp=f"{stamp}:{role}"))
    unnamed = sum(1 for r in rows if not r[2])
    notes = [f"labels: votes from {NEW_CSV}; pixels from {FER_CSV} by row order; ids are "
             f"{FER_CSV}#<row>, row counted from 0 after the header",
             f"{NEW_CSV}: {unnamed} row(s) without an image name (not faces) skipped"]
    return parts, notes
