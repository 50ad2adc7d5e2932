"""`Samples`: one split of a dataset as plain values (ids, image sources, labels, extras)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..labels import CLASSES


@dataclass(frozen=True)
class Samples:
    """One split: stable ids, where each image comes from, canonical labels and extras.

    `labels` are indices into `ferbench.labels.CLASSES` (never a dataset's native order).
    `extras` are per-sample arrays of length N; the names in `label_extras` were
    annotated together with the label (votes, valence/arousal, ground-truth
    distributions) and are withheld from training under noise.
    """

    dataset: str
    split: str
    ids: Sequence[str]           # a tuple, or `NumberedIds` for large generated sets
    source: "ImageSource"
    labels: np.ndarray
    classes: tuple[str, ...]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    label_extras: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        n = len(self.ids)
        if len(self.source) != n or len(self.labels) != n:
            raise ValueError("ids, source and labels must have equal length")
        for name, arr in self.extras.items():
            if len(arr) != n:
                raise ValueError(f"extra {name!r} has {len(arr)} rows for {n} samples")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fingerprint(self) -> str:
        """Hash of ids, source sizes and labels: identical on every machine."""
        h = hashlib.sha256()
        h.update(f"{self.dataset}/{self.split}\0".encode())
        # The bytes of "\0".join(ids), hashed a block at a time: a million ids never sit
        # in memory as one string.
        for start in range(0, len(self.ids), _HASH_BLOCK):
            block = "\0".join(self.ids[start:start + _HASH_BLOCK])
            h.update((("\0" if start else "") + block).encode())
        h.update(np.asarray(self.source.sizes(), dtype=np.int64).tobytes())
        h.update(np.asarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def class_counts(self) -> dict[str, int]:
        """Samples per canonical class, for the classes this split declares."""
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(CLASSES))
        return {c: int(counts[CLASSES.index(c)]) for c in self.classes}

    def subset(self, index) -> "Samples":
        """The samples at `index` (an int array), same dataset and split."""
        index = np.asarray(index, dtype=np.int64)
        return Samples(
            dataset=self.dataset, split=self.split,
            ids=(self.ids.subset(index) if isinstance(self.ids, NumberedIds)
                 else tuple(self.ids[i] for i in index)),
            source=self.source.subset(index),
            labels=np.asarray(self.labels)[index], classes=self.classes,
            extras={k: v[index] for k, v in self.extras.items()},
            label_extras=self.label_extras, notes=self.notes,
        )


_HASH_BLOCK = 65536


class NumberedIds(Sequence):
    """The ids `prefix + f"{number:0{width}d}"` of numbered samples, made when asked for.

    A tuple of a million ids holds about 90 MB of Python strings; this holds the
    numbers of a subset (8 bytes each) or, for a whole range, nothing. It compares
    equal to any sequence of the same ids.
    """

    def __init__(self, prefix: str, n: int, width: int = 6, numbers: np.ndarray | None = None):
        self.prefix, self.width = prefix, width
        self._numbers = None if numbers is None else np.asarray(numbers, dtype=np.int64)
        self._n = n if numbers is None else len(self._numbers)

    def __len__(self) -> int:
        return self._n

    def _id(self, number: int) -> str:
        return f"{self.prefix}{number:0{self.width}d}"

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(self._n)))
        i = int(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"id index {i} out of range for {self._n} ids")
        i %= self._n
        return self._id(i if self._numbers is None else int(self._numbers[i]))

    def __iter__(self):
        numbers = range(self._n) if self._numbers is None else self._numbers.tolist()
        return (self._id(k) for k in numbers)

    def subset(self, index) -> "NumberedIds":
        index = np.asarray(index, dtype=np.int64)
        numbers = index if self._numbers is None else self._numbers[index]
        return NumberedIds(self.prefix, len(numbers), self.width, numbers)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str) or len(other) != len(self):
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"NumberedIds({self.prefix!r}, n={self._n})"


class ImageSource:
    """Where the images of a split come from; picklable, so decoding can use every core."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> np.ndarray:
        """Image i as uint8 HxW (grey) or HxWx3 (RGB); DataError naming the file if unreadable."""
        raise NotImplementedError

    def sizes(self) -> np.ndarray:
        """A per-sample size (bytes on disk or of the encoded row) for the fingerprint."""
        raise NotImplementedError

    def stamp(self) -> str:
        """Changes whenever the images change on this machine (mtimes); validates a cache entry."""
        return ""

    def subset(self, index) -> "ImageSource":
        return _SubsetSource(self, np.asarray(index, dtype=np.int64))


class _SubsetSource(ImageSource):
    def __init__(self, base: ImageSource, index: np.ndarray):
        self.base, self.index = base, index

    def __len__(self):
        return len(self.index)

    def read(self, i):
        return self.base.read(int(self.index[i]))

    def sizes(self):
        return np.asarray(self.base.sizes())[self.index]

    def stamp(self):
        return self.base.stamp() + ":" + hashlib.sha1(self.index.tobytes()).hexdigest()[:12]


class FileSource(ImageSource):
    """Images stored as files under `root`, given by paths relative to it.

    `boxes` (optional, int [N, 4] as x, y, w, h) crops each image to its face box
    when the image is larger than the box (AffectNet's full frames).
    """

    def __init__(self, root: str | Path, paths, boxes: np.ndarray | None = None):
        self.root = Path(root)
        self.paths = list(paths)
        self.boxes = boxes
        self._sizes = None
        self._stamp = None

    def __len__(self):
        return len(self.paths)

    def _stat_all(self):
        sizes, h = [], hashlib.sha1()
        if self.boxes is not None:  # cropped and full frames of the same files differ
            h.update(b"boxes\0" + np.ascontiguousarray(self.boxes, dtype=np.int64).tobytes())
        for p in self.paths:
            try:
                st = (self.root / p).stat()
            except OSError:
                raise DataError(self.root / p, "image listed but missing") from None
            sizes.append(st.st_size)
            h.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
        self._sizes, self._stamp = np.asarray(sizes, dtype=np.int64), h.hexdigest()[:16]

    def sizes(self):
        if self._sizes is None:
            self._stat_all()
        return self._sizes

    def stamp(self):
        if self._stamp is None:
            self._stat_all()
        return self._stamp

    def read(self, i):
        from PIL import Image, UnidentifiedImageError

        path = self.root / self.paths[i]
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode.startswith("I") or im.mode == "F":
                    arr = _deep_grey_to_uint8(im)
                else:
                    im = im.convert("L") if im.mode in ("L", "1", "P", "LA") and _is_grey(im) \
                        else im.convert("RGB")
                    arr = np.asarray(im)
        except FileNotFoundError:
            raise DataError(path, "image listed but missing") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise DataError(path, f"unreadable or corrupt image ({type(e).__name__})") from None
        if self.boxes is not None:
            arr = crop_to_box(arr, self.boxes[i])
        return arr

    def __getstate__(self):
        return {"root": self.root, "paths": self.paths, "boxes": self.boxes,
                "_sizes": None, "_stamp": None}


def _deep_grey_to_uint8(im) -> np.ndarray:
    """A 16-bit (or 32-bit, or float) grey image scaled to 8 bits. PIL's convert("L") clips
    instead, which turns a 16-bit face white."""
    arr = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16") or (arr.size and arr.max() > 255):
        arr = arr / 257.0  # 65535 -> 255
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _is_grey(im) -> bool:
    if im.mode == "P":
        pal = im.convert("RGB")
        a = np.asarray(pal)
        return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
    return True


def crop_to_box(arr: np.ndarray, box) -> np.ndarray:
    """Crop to (x, y, w, h) when the image is larger than the box; clipped to the image."""
    x, y, w, h = (int(v) for v in box)
    H, W = arr.shape[:2]
    if w <= 0 or h <= 0 or (w >= W and h >= H):
        return arr
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return arr
    return arr[y0:y1, x0:x1]


class ArraySource(ImageSource):
    """Images held as a uint8 array [N, H, W] or [N, H, W, 3] (CSV pixel rows, generated sets)."""

    def __init__(self, images: np.ndarray, sizes: np.ndarray | None = None, stamp: str = ""):
        self.images = images
        self._sizes = sizes
        self._stamp = stamp

    def __len__(self):
        return len(self.images)

    def read(self, i):
        return np.asarray(self.images[i])

    def sizes(self):
        if self._sizes is None:
            return np.full(len(self.images), int(np.prod(self.images.shape[1:])), dtype=np.int64)
        return self._sizes

    def stamp(self):
        return self._stamp
