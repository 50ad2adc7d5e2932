"""Helpers the dataset adapters share: image folders, label files with line numbers, safe paths.

Private to `ferbench.datasets` (any adapter module may import it). Every helper
reports problems as `DataError`s that name the file and, for label files, the line,
so an adapter gets the one-line user messages of docs/design.md section 5 for free.
Ids are always posix paths relative to the dataset root, never absolute.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..labels import CLASSES, canonical
from .samples import FileSource, Samples

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                        ".pgm", ".ppm"})
# Folder names that name a split, case-insensitively (imagefolder roles, RAF-DB folder exports).
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "testing")
VAL_NAMES = ("val", "valid", "validation")


def shown(value: str, limit: int = 40) -> str:
    """A cell value quoted for an error message, shortened (a pixel row is 9 kB)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


# ---------------------------------------------------------------- folders

def hidden(name: str) -> bool:
    """Dot-files and macOS archive debris (`__MACOSX/`, `._x.png`) are never data."""
    return name.startswith(".") or name == "__MACOSX"


def is_image(name: str, exts=IMAGE_EXTS) -> bool:
    """Whether a file name has an image extension (case-insensitive) and is not hidden."""
    return not hidden(name) and os.path.splitext(name)[1].lower() in exts


def _cannot_list(e: OSError) -> None:
    # A missing folder simply holds nothing; an unreadable one would silently drop images.
    if not isinstance(e, (FileNotFoundError, NotADirectoryError)):
        raise DataError(Path(e.filename), f"cannot list folder ({e.strerror})") from None


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of `folder`; [] when it does not exist, DataError when it cannot be read."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        _cannot_list(e)
        return []


def subdirs(folder: Path) -> list[Path]:
    """The visible sub-folders of `folder`, sorted by name; [] when it is not a folder."""
    return sorted((Path(e.path) for e in _entries(folder) if e.is_dir() and not hidden(e.name)),
                  key=lambda p: p.name)


def image_files(root: Path, folder: Path, recursive: bool = True, exts=IMAGE_EXTS) -> list[str]:
    """Image files under `folder` as sorted posix paths relative to `root`."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_cannot_list):
        dirnames[:] = sorted(d for d in dirnames if not hidden(d)) if recursive else []
        rel = Path(dirpath).relative_to(root).as_posix()
        out.extend(posixpath.join(rel, f) if rel != "." else f
                   for f in filenames if is_image(f, exts))
    return sorted(out)


def folder_class(folder: Path, allowed=CLASSES) -> int:
    """The canonical index of a class folder's name; DataError naming the folder if unknown."""
    name, expected = canonical(folder.name), ", ".join(allowed)
    if name is None:
        raise DataError(folder, f"unknown class folder {folder.name!r}: not an emotion name "
                                f"(expected one of: {expected}, or a usual spelling)")
    if name not in allowed:
        raise DataError(folder, f"unknown class folder {folder.name!r} "
                                f"(expected one of: {expected})")
    return CLASSES.index(name)


def scan_class_folders(root: Path, sub: str = "", exts=IMAGE_EXTS) -> list[tuple[str, int]]:
    """(id, canonical index) of every image in `root/sub/<class folder>/`, sorted by id.

    Class folder names go through `labels.canonical`, so `angry/`, `Anger/` and
    `anger/` all mean anger; an unknown folder name is a DataError naming it.
    Files directly in `root/sub`, deeper folders and hidden entries are ignored.
    """
    out = []
    for folder in subdirs(root / sub if sub else root):
        label = folder_class(folder)
        out.extend((rel, label) for rel in image_files(root, folder, recursive=False, exts=exts))
    return sorted(out)


def has_class_folder(folder: Path) -> bool:
    """Whether `folder` has at least one sub-folder named like an emotion (for detection)."""
    return any(canonical(d.name) is not None for d in subdirs(folder))


class Listing:
    """Checks that listed files exist with one directory listing per folder (fast on 400k files)."""

    def __init__(self, root: Path):
        self.root, self._dirs = Path(root), {}

    def exists(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")
        names = self._dirs.get(parent)
        if names is None:
            names = self._dirs[parent] = {e.name for e in _entries(self.root / parent)}
        return name in names

    def require(self, rel: str, listfile: Path, line: int | None = None) -> None:
        """DataError naming the list file and line when `rel` is missing."""
        if not self.exists(rel):
            raise DataError(listfile, f"image {rel} is listed but missing", line)


def make_split(dataset: str, split: str, root: Path, ids, labels, classes,
               boxes=None, extras=None, label_extras=()) -> Samples:
    """A `Samples` of image files under `root` with canonical labels."""
    ids = tuple(ids)
    return Samples(
        dataset=dataset, split=split, ids=ids, source=FileSource(root, ids, boxes),
        labels=np.asarray(labels, dtype=np.int64).reshape(len(ids)), classes=tuple(classes),
        extras=dict(extras or {}), label_extras=frozenset(label_extras),
    )


def split_roles(names, where: Path) -> tuple[str | None, str | None, str | None]:
    """(train, test, val) split names among folder names; test falls back to val when absent."""
    found: dict[str, str] = {}
    for role, aliases in (("train", TRAIN_NAMES), ("test", TEST_NAMES), ("val", VAL_NAMES)):
        hits = [n for n in names if n.lower() in aliases]
        if len(hits) > 1:
            raise DataError(where, f"folders {', '.join(hits)} all look like the {role} split; "
                                   f"keep one")
        if hits:
            found[role] = hits[0]
    train, test, val = found.get("train"), found.get("test"), found.get("val")
    if test is None:
        test, val = val, None
    return train, test, val


# ---------------------------------------------------------------- label files

def safe_relpath(root: Path | None, name: str, listfile: Path, line: int | None = None,
                 under: str = "") -> str:
    """`under/name` as a posix path relative to `root`; DataError if it is empty or could leave it.

    A label file is input like any other: `../x.png` or `/etc/x.png` in it must not
    make ferbench read (or cache, or name in a result) a file outside the dataset.
    With `root=None` (names relative to a folder the caller joins later) every
    absolute path is refused.
    """
    name = name.strip().replace("\\", "/")
    if root is not None and (posixpath.isabs(name) or re.match(r"[A-Za-z]:/", name)):
        # Absolute paths from the author's machine are usable only when they lie under root.
        base = Path(root).absolute().as_posix().rstrip("/") + "/"
        norm = posixpath.normpath(name)
        if not norm.startswith(base):
            raise DataError(listfile, f"absolute path {name!r} lies outside the data root", line)
        name, under = norm[len(base):], ""
    # `C:x.png` is relative to the current folder of drive C on Windows: it leaves as well.
    drive = re.match(r"[A-Za-z]:", name)
    if not name or drive or posixpath.isabs(name) or ".." in name.split("/"):
        raise DataError(listfile, f"image path {name!r} is empty or escapes the data root",
                        line)
    return posixpath.normpath(posixpath.join(under, name))


def open_text(path: Path):
    """Open a text label file (BOM tolerated); DataError naming it when missing."""
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror})") from None


def read_rows(path: Path, ncols: int | None = None, form: str | None = None,
              maxsplit: int = -1, header: bool = False):
    """Yield (line, fields) of a CSV file, or of a whitespace-separated list when `form` is given.

    `line` is the 1-based physical line where the row ends (what an editor shows);
    blank lines are skipped. A row without `ncols` fields is a DataError; for a list
    it quotes the line and `form`, the shape a line should have. With `header=True`
    the first row is yielded unchecked and its width is required of the rest; a file
    without one is a DataError.
    """
    last = 0
    with open_text(path) as f:
        reader = csv.reader(f)
        if form is None:
            rows = ((reader.line_num, row, None) for row in reader)
        else:  # strip only the line end: a name read with maxsplit may hold spaces
            rows = ((n, raw.rstrip("\r\n").split(None, maxsplit), raw)
                    for n, raw in enumerate(f, 1))
        try:
            for last, row, raw in rows:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if header:
                    header, ncols = False, len(row)
                elif ncols is not None and len(row) != ncols:
                    problem = (f"expected {ncols} columns, found {len(row)}" if raw is None else
                               f"malformed line {raw.strip()[:60]!r}: expected {form!r}")
                    raise DataError(path, problem, last)
                yield last, row
            if header:
                raise DataError(path, "file is empty")
        except UnicodeDecodeError:
            raise DataError(path, "not a UTF-8 text file", last + 1) from None
        except csv.Error as e:
            raise DataError(path, f"malformed CSV ({e})", reader.line_num) from None


def header_index(header: list[str], wanted, path: Path) -> dict[str, int]:
    """Column index of each wanted name in a header row (names compared stripped, any case)."""
    found = {h.strip().lower(): i for i, h in enumerate(header)}
    missing = [w for w in wanted if w.lower() not in found]
    if missing:
        raise DataError(path, f"header lacks column(s) {', '.join(missing)} "
                              f"(found: {', '.join(h.strip() for h in header)})", 1)
    return {w: found[w.lower()] for w in wanted}


def parse_int(value: str, path: Path, line: int, what: str) -> int:
    """An integer field, or a DataError naming the file and line."""
    try:
        return int(value)
    except ValueError:
        raise DataError(path, f"{what} {value!r} is not an integer", line) from None


def parse_floats(values, path: Path, line: int) -> list[float]:
    """Numbers from CSV cells; DataError with file and line unless each is finite and >= 0."""
    try:
        out = [float(v) for v in values]
    except ValueError:
        raise DataError(path, f"expected numbers, found {shown(','.join(values))}", line) from None
    if any(not np.isfinite(v) or v < 0 for v in out):
        raise DataError(path, f"expected non-negative numbers, found {shown(','.join(values))}",
                        line)
    return out


def parse_pixels(text: str, count: int, path: Path, line: int) -> np.ndarray:
    """A space-separated row of `count` integers in 0..255 as uint8 (the FER2013 `pixels` cell).

    `np.fromstring` in text mode parses a 2,304-pixel row ~5x faster than
    `split()` + int conversion (2 s for all of FER2013); its "unmatched data"
    deprecation warning is turned into an error, which is what it means here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            values = None
    if values is None:
        raise DataError(path, "pixels are not space-separated integers", line)
    if len(values) != count:
        raise DataError(path, f"expected {count} pixels, found {len(values)}", line)
    if values.min() < 0 or values.max() > 255:
        raise DataError(path, "pixel values must lie in 0..255", line)
    return values.astype(np.uint8)


def file_stamp(path: Path) -> str:
    """mtime and size of a file: changes whenever the file does (validates decoded caches)."""
    st = path.stat()
    return f"{st.st_mtime_ns}-{st.st_size}"


def no_duplicates(ids, listfile: Path, lines=None) -> None:
    """DataError at the second occurrence of any id."""
    seen = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise DataError(listfile, f"{x} is listed twice", lines[i] if lines else None)
        seen.add(x)


@dataclass(frozen=True)
class IndexRow:
    """One image of CUB-style index lists, with the line of each of its fields."""

    idx: int
    name: str
    name_line: int
    label: str
    label_line: int
    train: bool


def read_index_lists(images: Path, labels: Path, split: Path) -> list[IndexRow]:
    """Join CUB-style lists (`<id> <name>`, `<id> <label>`, `<id> <1=train|0=test>`) on the id.

    The layout of CEPrompt / UA-FER (and CUB-200 before them); rows are returned in id order.
    """
    def table(path, maxsplit=-1):
        out = {}
        for n, (key, value) in read_rows(path, 2, "<id> <value>", maxsplit):
            k = parse_int(key, path, n, "image id")
            if k in out:
                raise DataError(path, f"image id {k} appears twice", n)
            out[k] = (value, n)
        return out

    names, labs, flags = table(images, 1), table(labels), table(split)
    for other, rows in ((labels, labs), (split, flags)):
        for k, (_, n) in rows.items():
            if k not in names:
                raise DataError(other, f"image id {k} is not in {images.name}", n)
    out = []
    for k in sorted(names):
        for other, rows in ((labels, labs), (split, flags)):
            if k not in rows:
                raise DataError(other, f"no row for image id {k} ({images.name}:{names[k][1]})")
        flag, fline = flags[k]
        if flag not in ("0", "1"):
            raise DataError(split, f"split flag {flag!r} is not 1 (train) or 0 (test)", fline)
        out.append(IndexRow(k, names[k][0], names[k][1], labs[k][0], labs[k][1], flag == "1"))
    return out
