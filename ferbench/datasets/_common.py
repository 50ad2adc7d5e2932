"""Helpers the dataset adapters share: image folders, CSV rows with line numbers, safe paths.

Private to `ferbench.datasets` (any adapter module may import it). Every helper
reports problems as `DataError`s that name the file and, for CSV input, the line,
so an adapter gets the one-line user messages of DESIGN.md section 6 for free.
Ids are always posix paths relative to the dataset root, never absolute.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from ..labels import CLASSES, canonical

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def shown(value: str, limit: int = 40) -> str:
    """A cell value quoted for an error message, shortened (a pixel row is 9 kB)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def is_image(name: str, exts=IMAGE_EXTS) -> bool:
    """Whether a file name has an image extension (case-insensitive) and is not hidden."""
    return not hidden(name) and os.path.splitext(name)[1].lower() in exts


def hidden(name: str) -> bool:
    """Dot-files and macOS archive debris (`__MACOSX/`, `._x.png`) are never data."""
    return name.startswith(".") or name == "__MACOSX"


def subdirs(folder: Path) -> list[str]:
    """Names of the visible sub-folders of `folder`, sorted; [] when it is not a folder."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.is_dir() and not hidden(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_images(folder: Path, exts=IMAGE_EXTS) -> list[str]:
    """Names of the image files directly in `folder`, sorted (so ids have a stable order)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if e.is_file() and is_image(e.name, exts))
    except OSError as e:
        raise DataError(folder, f"cannot list folder ({e.strerror})") from None


def list_names(folder: Path) -> set[str]:
    """Every entry name in `folder` (one directory read: cheaper than a stat per listed image)."""
    try:
        return set(os.listdir(folder))
    except OSError as e:
        raise DataError(folder, f"cannot list folder ({e.strerror})") from None


def rel(root: Path, path: Path) -> str:
    """`path` relative to `root` in posix form: the stable sample id."""
    return path.relative_to(root).as_posix()


def class_of_folder(folder: Path) -> str:
    """The canonical class of a class folder's name; DataError naming the folder if unknown."""
    name = canonical(folder.name)
    if name is None:
        raise DataError(folder, f"folder name {folder.name!r} is not an emotion class "
                                f"(expected one of: {', '.join(CLASSES)} or a usual spelling)")
    return name


def scan_class_folders(root: Path, sub: str = "", exts=IMAGE_EXTS) -> list[tuple[str, str]]:
    """(id, canonical class) of every image in `root/sub/<class folder>/`, sorted by id.

    Class folder names go through `labels.canonical`, so `angry/`, `Anger/` and
    `anger/` all mean anger; an unknown folder name is a DataError naming it.
    Files directly in `root/sub` and hidden entries are ignored.
    """
    base = root / sub if sub else root
    out = []
    for folder in subdirs(base):
        cls = class_of_folder(base / folder)
        prefix = f"{sub}/{folder}/" if sub else f"{folder}/"
        out.extend((prefix + name, cls) for name in list_images(base / folder, exts))
    return sorted(out)


def has_class_folder(folder: Path) -> bool:
    """Whether `folder` has at least one sub-folder named like an emotion (for detection)."""
    return any(canonical(d) is not None for d in subdirs(folder))


def safe_member(name: str, path: Path, line: int | None = None) -> str:
    """A relative posix path read from a label file, refused if it could leave its folder.

    A label file is input like any other: `../x.png` or `/etc/x.png` in it must not
    make ferbench read (or cache, or name in a result) a file outside the dataset.
    """
    p = PurePosixPath(name.replace("\\", "/"))
    if not name or p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DataError(path, f"image path {name!r} is empty or leaves the dataset folder", line)
    return p.as_posix()


def open_text(path: Path):
    """Open a text label file (BOM tolerated); DataError naming it when missing."""
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror})") from None


def csv_rows(path: Path, ncols: int | None = None, header: bool = False):
    """Yield (line, row) of a CSV file, checking the column count of every row.

    `line` is the 1-based physical line where the row ends (what an editor shows).
    Blank lines are skipped. With `header=True` the first row is yielded too, as
    line 1, so the caller can check or index it. Decoding errors become DataErrors.
    """
    with open_text(path) as f:
        reader = csv.reader(f)
        first = True
        try:
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if not (header and first) and ncols is not None and len(row) != ncols:
                    raise DataError(path, f"expected {ncols} columns, found {len(row)}",
                                    reader.line_num)
                first = False
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise DataError(path, "not a UTF-8 text file", reader.line_num + 1) from None
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


def check_listed(root: Path, folder: str, names, label_file: Path, lines) -> None:
    """DataError naming the label file and line of the first listed image that does not exist.

    `FileSource` would fail later, at the first stat or decode; checking at open
    time (one directory read per folder) gives the user the label line at fault.
    """
    present = list_names(root / folder) if (root / folder).is_dir() else set()
    for name, line in zip(names, lines):
        if name in present or ("/" in name and (root / folder / name).is_file()):
            continue
        raise DataError(label_file, f"lists {folder}/{name}, which does not exist", line)
