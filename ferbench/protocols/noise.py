"""Noisy training labels as artefacts with an id: generated, read from a user's file, hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..datasets.samples import Samples
from ..errors import DataError, missing_file
from ..labels import canonical

if TYPE_CHECKING:
    from ..datasets.base import Dataset
    from .base import ProtocolView


@dataclass
class NoiseRecord:
    """Flipped training samples, measured against the clean labels."""

    source: str                 # "generated" or "file"
    flipped: np.ndarray         # bool [N_train]
    noisy: np.ndarray           # run-class labels [N_train] after noise
    document: dict              # the JSON written beside the results
    hash: str = ""

    @property
    def rate(self) -> float:
        return float(self.flipped.mean()) if len(self.flipped) else 0.0


def derive_seed(*parts) -> int:
    """A 64-bit seed hashed from `parts`, so equal inputs draw equal numbers on every machine."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def generate_noise(samples: Samples, labels: np.ndarray, k: int, rate: float,
                   noise_seed: int) -> np.ndarray:
    """Exactly round(rate/100 · N) labels, chosen uniformly, each moved to another class."""
    n = len(labels)
    # Exact arithmetic: in floats 29/100 · 50 is 14.4999..., which would round to 14, not 15.
    n_flip = int(Fraction(str(float(rate))) * n / 100 + Fraction(1, 2))
    rng = np.random.default_rng(derive_seed("noise", samples.fingerprint, repr(float(rate)),
                                            noise_seed))
    idx = rng.choice(n, size=n_flip, replace=False)
    # A shift of 1..K-1 is uniform over the other classes and never the same class.
    noisy = labels.copy()
    noisy[idx] = (labels[idx] + rng.integers(1, k, size=n_flip)) % k
    return noisy


def noise_document(view_id, samples, classes, clean, noisy, extra) -> dict:
    """The noise file's content: flips by sample id, realised rate and transition matrix."""
    k = len(classes)
    flipped = np.flatnonzero(clean != noisy)
    transition = np.zeros((k, k), dtype=np.int64)
    np.add.at(transition, (clean, noisy), 1)
    return {
        "protocol": view_id, "dataset": samples.dataset, "fingerprint": samples.fingerprint,
        "classes": list(classes), "n_train": len(clean), "n_flipped": len(flipped),
        "realised_rate": round(float(len(flipped) / max(1, len(clean))), 6), **extra,
        "transition": transition.tolist(),
        "flips": [{"id": samples.ids[i], "clean": classes[clean[i]], "noisy": classes[noisy[i]]}
                  for i in flipped],
    }


def document_hash(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _name_keys(sample_id: str) -> set[str]:
    base = sample_id.rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    keys = {sample_id, base}
    if stem.endswith("_aligned"):  # RAF-DB aligned images carry a suffix the lists omit
        keys.add(stem[: -len("_aligned")] + dot + ext)
    return keys


def read_noise_file(path: Path, ds: Dataset, view: ProtocolView) -> np.ndarray:
    """Noisy run-class labels for the training set from `name label` lines."""
    if not path.is_file():
        raise missing_file(path, "noise file")
    train_keys: dict[str, int] = {}
    shared: dict[str, int] = {}  # a key (a bare file name) that several training images have
    for i, sid in enumerate(view.train.ids):
        for key in _name_keys(sid):
            if train_keys.setdefault(key, i) != i:
                shared[key] = shared.get(key, 1) + 1
    test_keys = {key for sid in view.test.ids for key in _name_keys(sid)}
    # Numeric labels are the dataset's own codes, which only its adapter knows.
    adapter_native = getattr(ds.adapter, "native_labels", None)
    noisy = view.clean_train_labels.copy()
    seen: dict[int, int] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not a UTF-8 text file (byte {e.start})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(path, f"expected 'name label', got {line.strip()!r}", lineno)
        name, label = parts
        if name not in train_keys:
            if name in test_keys:
                raise DataError(path, f"{name} is a test image; a noise file lists train "
                                      f"images only", lineno)
            raise DataError(path, f"unknown image name {name}: not among the "
                                  f"{len(view.train):,} training faces of {ds.name} as read",
                            lineno)
        if name in shared:
            raise DataError(path, f"{name} names {shared[name]} training images (one file "
                                  f"name in several folders): give its path relative to the "
                                  f"data root", lineno)
        i = train_keys[name]
        if i in seen:
            raise DataError(path, f"duplicate image name {name} (first on line {seen[i]})",
                            lineno)
        seen[i] = lineno
        cls = _label_name(label, adapter_native)
        if cls is None or cls not in view.classes:
            raise DataError(path, f"label {label!r} is not a class of {ds.name}", lineno)
        noisy[i] = view.classes.index(cls)
    if not seen:
        raise DataError(path, "noise file lists no images")
    if len(seen) != len(view.train):
        missing = next(view.train.ids[i] for i in range(len(view.train)) if i not in seen)
        raise DataError(path, f"lists {len(seen)} of {len(view.train)} training images; "
                              f"missing, e.g., {missing.rsplit('/', 1)[-1]}")
    return noisy


def _label_name(label: str, native: dict[int, str] | None) -> str | None:
    if label.lstrip("-").isdigit():
        return native.get(int(label)) if native else None
    return canonical(label)


def with_noisy_labels(view, source: str, noisy: np.ndarray, doc: dict):
    """The view training on `noisy`, its flips measured against the clean labels and its
    noise file (`doc`) hashed."""
    view.noise = NoiseRecord(source, noisy != view.clean_train_labels, noisy, doc,
                             document_hash(doc))
    view.train_labels = noisy
    return view
