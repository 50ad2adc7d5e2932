"""User extra files: per-sample values a method reads, given as `--extra NAME=PATH[:kind]`.

A file is keyed by sample id and must cover the training split exactly, so it enters the
run the way a dataset's own extra does: attached to the training split before any protocol,
declared label-carrying (withheld under noise) or image-derived (always permitted).
"""

from __future__ import annotations

import csv
import dataclasses
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError, missing_file
from .runkey import file_digest

KINDS = {"image": "image-derived", "label": "label-carrying"}
# A file a model made from the faces (pseudo valence-arousal, features) is image-derived;
# annotations made with the label must say so with :label.
DEFAULT_KIND = "image"
FORMATS = "a .csv (a header row, then the sample id and one column per value) or an .npz " \
          "(arrays ids [N] and values [N, ...])"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ExtraSpec:
    """One `--extra` as given: the name the method reads, the file, its kind."""

    name: str
    path: Path
    kind: str   # "image" | "label"


@dataclass(frozen=True)
class UserExtra:
    """A checked extra file: one row of values per training sample, in the split's order."""

    spec: ExtraSpec
    values: np.ndarray
    sha256: str   # of the file's bytes, 16 hex

    def describe(self) -> dict:
        return {"file": self.spec.path.name, "hash": self.sha256, "kind": self.spec.kind,
                "width": int(np.prod(self.values.shape[1:], dtype=np.int64))}


def parse_extras(texts) -> list[ExtraSpec]:
    """`NAME=PATH[:label|:image]` forms → specs; a bad form, name or file is one error."""
    specs = [parse_extra(t) for t in texts]
    seen = set()
    for s in specs:
        if s.name in seen:
            raise ConfigError(f"--extra {s.name}: the name is given twice (one file per name)")
        seen.add(s.name)
    return specs


def parse_extra(text: str) -> ExtraSpec:
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not rest.strip():
        raise ConfigError(f"--extra {text!r}: expected NAME=PATH, NAME=PATH:label or "
                          f"NAME=PATH:image")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"--extra {text!r}: the name {name!r} must be letters, digits and _, "
                          f"not starting with a digit (a method reads batch['extras'][NAME])")
    path, kind = rest.strip(), DEFAULT_KIND
    head, colon, tail = path.rpartition(":")
    if colon and head and not any(c in tail for c in "/\\"):
        if tail in KINDS:
            path, kind = head, tail
        elif not Path(path).expanduser().exists():  # a path that holds a colon is still a path
            raise ConfigError(f"--extra {text!r}: unknown kind {tail!r} (:label for values "
                              f"annotated with the label, withheld under noise; :image, the "
                              f"default, for values derived from the image alone)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise missing_file(path, "per-sample extra file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raise DataError(path, "an .npy array holds no sample ids; save ids and values "
                              "together: np.savez(FILE.npz, ids=ids, values=values)")
    if suffix not in (".csv", ".npz"):
        raise DataError(path, f"unknown extra file format {suffix or '(no suffix)'}: expected "
                              f"{FORMATS}")
    return ExtraSpec(name, path, kind)


def read_extras(specs: list[ExtraSpec], ds) -> list[UserExtra]:
    """Each file read and checked against the training split of `ds`."""
    if not specs:
        return []
    own = {k for s in ds.splits.values() for k in s.extras}
    for s in specs:
        if s.name in own:
            raise ConfigError(f"--extra {s.name}={s.path}: {ds.name} has an extra of that name "
                              f"already (its own: {', '.join(sorted(own))}); choose another "
                              f"name")
    train = ds.split(ds.train)
    index = {sid: i for i, sid in enumerate(train.ids)}
    out = []
    for s in specs:
        read = _read_csv if s.path.suffix.lower() == ".csv" else _read_npz
        values = read(s.path, index, _Ids(ds, train))
        out.append(UserExtra(s, values, file_digest(s.path)))
    return out


def attach_extras(ds, extras: list[UserExtra]) -> dict:
    """Put the extras on the training split of `ds`, before any protocol takes its view, so
    every subset of it (a validation hold-out, a matched subset) carries them; returns what
    the result records of them ({} without any)."""
    if not extras:
        return {}
    train = ds.split(ds.train)
    ds.splits[ds.train] = dataclasses.replace(
        train, extras={**train.extras, **{e.spec.name: e.values for e in extras}},
        label_extras=train.label_extras | {e.spec.name for e in extras
                                           if e.spec.kind == "label"})
    return {e.spec.name: e.describe() for e in extras}


class _Ids:
    """What the error for an id that is not a training sample says about it."""

    def __init__(self, ds, train):
        self.ds, self.train = ds, train

    def unknown(self, path: Path, sid: str, line: int | None = None) -> DataError:
        for name, split in self.ds.splits.items():
            if name != self.ds.train and split is not self.train and sid in split.ids:
                return DataError(path, f"{sid!r} is a {name} sample, not a training one: an "
                                       f"extra file holds the training samples only", line)
        return DataError(path, f"{sid!r} is not a training sample of {self.ds.name} (ids are "
                               f"the path relative to the data root or the row key, as the "
                               f"result's train_ids, e.g. {self.train.ids[0]!r})", line)

    def missing(self, path: Path, seen: np.ndarray) -> DataError:
        miss = np.flatnonzero(~seen)
        return DataError(path, f"{len(miss):,} of {len(seen):,} training samples have no "
                               f"values, e.g. {self.train.ids[int(miss[0])]!r} (the file must "
                               f"cover every training sample)")


def _read_csv(path: Path, index: dict, ids: _Ids) -> np.ndarray:
    n = len(index)
    header, values = None, None
    first = np.zeros(n, np.int64)   # the line that gave each sample its values; 0: none yet
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            for row in rows:
                line = rows.line_num
                if not any(c.strip() for c in row):
                    continue
                cells = [c.strip() for c in row]
                if header is None:
                    header = cells
                    if cells[0] in index:
                        raise DataError(path, "the first row is a sample, not a header: the "
                                              "file starts with a header row naming its "
                                              "columns (e.g. id,valence,arousal)", line)
                    if len(cells) < 2:
                        raise DataError(path, "the header names no value column: expected "
                                              "the sample id, then one column per value", line)
                    values = np.empty((n, len(cells) - 1), np.float32)
                    continue
                if len(cells) != len(header):
                    raise DataError(path, f"{len(cells)} columns where the header names "
                                          f"{len(header)}", line)
                sid = cells[0]
                i = index.get(sid)
                if i is None:
                    raise ids.unknown(path, sid, line)
                if first[i]:
                    raise DataError(path, f"{sid!r} appears again (first on line "
                                          f"{first[i]}): one row per sample", line)
                for j, (col, cell) in enumerate(zip(header[1:], cells[1:])):
                    try:
                        v = float(cell)
                    except ValueError:
                        raise DataError(path, f"column {col!r} holds {cell!r}, not a number",
                                        line) from None
                    if not abs(v) <= _F32_MAX:  # NaN fails too
                        raise DataError(path, f"column {col!r} holds {cell!r}, not a finite "
                                              f"number (in float32)", line)
                    values[i, j] = v
                first[i] = line
    except UnicodeDecodeError:
        raise DataError(path, "not a UTF-8 text file") from None
    except csv.Error as e:
        raise DataError(path, f"malformed CSV ({e})", rows.line_num) from None
    if header is None:
        raise DataError(path, "empty: expected a header row, then one row per training sample")
    if not first.all():
        raise ids.missing(path, first > 0)
    return values


def _read_npz(path: Path, index: dict, ids: _Ids) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        raise DataError(path, "not an .npz archive (np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as z:
            absent = [k for k in ("ids", "values") if k not in z.files]
            if absent:
                raise DataError(path, f"no array {' or '.join(absent)}: an extra .npz holds "
                                      f"ids [N] and values [N, ...] (it has: "
                                      f"{', '.join(z.files) or 'nothing'})")
            file_ids, values = z["ids"], z["values"]
    except ValueError:
        raise DataError(path, "holds an object array, which needs pickle to read: save ids "
                              "as strings (np.array(ids, dtype=str)) and values as "
                              "numbers") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, f"unreadable .npz ({type(e).__name__})") from None
    if file_ids.ndim != 1 or file_ids.dtype.kind not in "US":
        raise DataError(path, f"ids must be a 1-D array of strings (it is {file_ids.dtype} of "
                              f"shape {file_ids.shape})")
    if values.ndim < 1 or len(values) != len(file_ids):
        raise DataError(path, f"values has shape {values.shape} for {len(file_ids)} ids: one "
                              f"row per id")
    if values.dtype.kind not in "fiub":
        raise DataError(path, f"values must be numbers (it is {values.dtype})")
    if values.dtype.kind == "f":
        finite = (np.abs(values.reshape(len(values), -1)) <= _F32_MAX).all(axis=1)
    else:
        finite = np.ones(len(values), bool)
    if file_ids.dtype.kind == "S":
        file_ids = np.char.decode(file_ids, "utf-8")
    order = np.empty(len(file_ids), np.int64)
    row_of = np.full(len(index), -1, np.int64)
    for r, sid in enumerate(file_ids.tolist()):
        i = index.get(sid)
        if i is None:
            raise ids.unknown(path, sid)
        if row_of[i] >= 0:
            raise DataError(path, f"id {sid!r} appears again (rows {row_of[i]} and {r} of "
                                  f"ids): one row per sample")
        if not finite[r]:
            raise DataError(path, f"id {sid!r} has a value that is not finite in float32 "
                                  f"(NaN, inf, or beyond ±3.4e38)")
        row_of[i], order[r] = r, i
    seen = row_of >= 0
    if not seen.all():
        raise ids.missing(path, seen)
    # Floats as the engine computes (the checks above keep the cast finite).
    out = np.empty(values.shape, np.float32 if values.dtype.kind == "f" else values.dtype)
    out[order] = values
    return out
