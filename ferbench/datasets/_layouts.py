"""Private helpers shared by the list- and folder-based adapters (rafdb, affectnet, jaffe, ...)."""

from __future__ import annotations

import os
import posixpath
import re
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


def is_image(name: str) -> bool:
    """Whether a file name has an image extension."""
    return Path(name).suffix.lower() in IMAGE_EXTS


def _hidden(name: str) -> bool:
    # macOS archives carry ._* files and __MACOSX folders; editors leave dot-folders.
    return name.startswith(".") or name == "__MACOSX"


def subdirs(folder: Path) -> list[Path]:
    """The visible sub-folders of `folder`, sorted by name."""
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name)),
                      key=lambda p: p.name)
    except OSError:
        return []


def image_files(root: Path, folder: Path, recursive: bool = True) -> list[str]:
    """Image files under `folder` as sorted posix paths relative to `root`."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d)) if recursive else []
        rel = Path(dirpath).relative_to(root).as_posix()
        out.extend(posixpath.join(rel, f) if rel != "." else f
                   for f in filenames if not _hidden(f) and is_image(f))
    return sorted(out)


def safe_relpath(root: Path, name: str, listfile: Path, line: int | None = None,
                 under: str = "") -> str:
    """`under/name` as a posix path relative to `root`; DataError if it escapes the root."""
    name = name.strip().replace("\\", "/")
    if posixpath.isabs(name) or re.match(r"[A-Za-z]:/", name):
        # Absolute paths from the author's machine are usable only when they lie under root.
        base = Path(root).absolute().as_posix().rstrip("/") + "/"
        norm = posixpath.normpath(name)
        if not norm.startswith(base):
            raise DataError(listfile, f"absolute path {name!r} lies outside the data root", line)
        name, under = norm[len(base):], ""
    if ".." in name.split("/") or not name:
        raise DataError(listfile, f"listed path {name!r} escapes the data root", line)
    return posixpath.normpath(posixpath.join(under, name)) if under else posixpath.normpath(name)


def read_rows(path: Path, ncols: int, form: str, maxsplit: int = -1):
    """Yield (line number, fields) of a whitespace-separated list, skipping blank lines."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"unreadable ({type(e).__name__})") from None
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split(None, maxsplit)
        if not fields:
            continue
        if len(fields) != ncols:
            raise DataError(path, f"malformed line {raw.strip()[:60]!r}: expected {form!r}", n)
        yield n, fields


def parse_int(value: str, path: Path, line: int, what: str) -> int:
    """An integer field, or a DataError naming the file and line."""
    try:
        return int(value)
    except ValueError:
        raise DataError(path, f"{what} {value!r} is not an integer", line) from None


class Listing:
    """Checks that listed files exist with one directory listing per folder (fast on 400k files)."""

    def __init__(self, root: Path):
        self.root, self._dirs = Path(root), {}

    def exists(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")
        names = self._dirs.get(parent)
        if names is None:
            try:
                names = set(os.listdir(self.root / parent))
            except OSError:
                names = set()
            self._dirs[parent] = names
        return name in names

    def require(self, rel: str, listfile: Path, line: int | None = None) -> None:
        """DataError naming the list file and line when `rel` is missing."""
        if not self.exists(rel):
            raise DataError(listfile, f"image {rel} is listed but missing", line)


def native_table(names) -> list[int]:
    """Canonical indices of a dataset's native class order, given as canonical names."""
    return [CLASSES.index(n) for n in names]


def folder_class(folder: Path, allowed) -> int:
    """The canonical index of a class folder's name; DataError naming the folder if unknown."""
    name = canonical(folder.name)
    if name is None or name not in allowed:
        raise DataError(folder, f"unknown class folder {folder.name!r} "
                                f"(expected one of: {', '.join(allowed)})")
    return CLASSES.index(name)


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


def no_duplicates(ids, listfile: Path, lines=None) -> None:
    """DataError at the second occurrence of any id."""
    seen = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise DataError(listfile, f"{x} is listed twice", lines[i] if lines else None)
        seen.add(x)


@dataclass(frozen=True)
class IndexRow:
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


def make_split(dataset: str, split: str, root: Path, ids, labels, classes,
               boxes=None, extras=None, label_extras=()) -> Samples:
    """A `Samples` of image files under `root` with canonical labels."""
    ids = tuple(ids)
    return Samples(
        dataset=dataset, split=split, ids=ids, source=FileSource(root, ids, boxes),
        labels=np.asarray(labels, dtype=np.int64).reshape(len(ids)), classes=tuple(classes),
        extras=dict(extras or {}), label_extras=frozenset(label_extras),
    )
