"""Protocols: clean, generated noise, a user's noise file and cross-dataset, as data.

A protocol turns an opened dataset into a `ProtocolView`: the training labels a
method may see, the test set, the run's class list, and a record (flips, class
mapping) that only the harness reads. Noise is an artefact with an id: the
same (dataset fingerprint, rate, noise seed) always gives the same flips, and
they are saved as a file whose hash goes into every result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .datasets.base import Dataset
from .datasets.samples import Samples
from .errors import ConfigError, DataError, missing_file
from .hookspecs import hookimpl
from .labels import CLASSES, canonical, shared_classes


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


@dataclass
class ProtocolView:
    """What a run sees: labels in 0..K-1 over `classes`, plus the harness-only record."""

    id: str
    family: str
    params: dict
    classes: tuple[str, ...]
    train: Samples
    train_labels: np.ndarray            # what the method sees (noisy under noise)
    clean_train_labels: np.ndarray      # harness only
    test: Samples
    test_labels: np.ndarray
    val: Samples | None = None
    val_labels: np.ndarray | None = None
    scored_classes: tuple[int, ...] = ()  # class indices scored on the test set (cross: shared)
    noise: NoiseRecord | None = None
    withhold_label_extras: bool = False
    record: dict = field(default_factory=dict)

    @property
    def flipped(self) -> np.ndarray:
        return self.noise.flipped if self.noise else np.zeros(len(self.train), bool)


def to_run_labels(samples: Samples | np.ndarray, classes) -> np.ndarray:
    """Canonical labels (of samples, or given) → indices into the run's class list (-1 for
    classes not in it)."""
    lut = np.full(len(CLASSES), -1, dtype=np.int64)
    for i, c in enumerate(classes):
        lut[CLASSES.index(c)] = i
    labels = samples.labels if isinstance(samples, Samples) else samples
    return lut[np.asarray(labels, dtype=np.int64)]


def _seed_from(*parts) -> int:
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def generate_noise(samples: Samples, labels: np.ndarray, k: int, rate: float,
                   noise_seed: int) -> np.ndarray:
    """Exactly round(rate/100 · N) labels, chosen uniformly, each moved to another class."""
    n = len(labels)
    # Exact arithmetic: in floats 29/100 · 50 is 14.4999..., which would round to 14, not 15.
    n_flip = int(Fraction(str(float(rate))) * n / 100 + Fraction(1, 2))
    rng = np.random.default_rng(_seed_from("noise", samples.fingerprint, repr(float(rate)),
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
        "classes": list(classes), "n_train": int(len(clean)), "n_flipped": int(len(flipped)),
        "realised_rate": round(float(len(flipped) / max(1, len(clean))), 6), **extra,
        "transition": transition.tolist(),
        "flips": [{"id": samples.ids[i], "clean": classes[clean[i]], "noisy": classes[noisy[i]]}
                  for i in flipped],
    }


def document_hash(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _stratified_holdout(labels: np.ndarray, fraction: float, seed_parts) -> np.ndarray:
    """A deterministic, stratified boolean mask of the share `fraction` of each class."""
    rng = np.random.default_rng(_seed_from("val", *seed_parts))
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = int(np.floor(fraction * len(idx) + 0.5))
        mask[rng.choice(idx, size=take, replace=False)] = True
    return mask


class Protocol:
    """A protocol family. `parse` reads command-line forms; `apply` builds the view."""

    family = ""
    defaults: dict[str, Any] = {}
    # Run-request fields the family reads beside its own parameters (e.g. a second root).
    reads: tuple[str, ...] = ()
    usage = ""  # how to write a family that needs a value, e.g. noise30

    def parse(self, text: str) -> dict | None:
        return {} if text == self.family else None

    def id(self, params: dict) -> str:
        return self.family

    def apply(self, ds: Dataset, params: dict, open_target=None) -> ProtocolView:
        raise NotImplementedError

    # Shared by every family: the dataset's own splits in its own class space.
    def _base_view(self, ds: Dataset, params: dict) -> ProtocolView:
        classes = ds.classes
        train, test = ds.split(ds.train), ds.split(ds.test)
        tl = to_run_labels(train, classes)
        val = ds.split(ds.val) if ds.val else None
        return ProtocolView(
            id=self.id(params), family=self.family, params=params, classes=classes,
            train=train, train_labels=tl, clean_train_labels=tl.copy(),
            test=test, test_labels=to_run_labels(test, classes), val=val,
            val_labels=to_run_labels(val, classes) if val is not None else None,
            scored_classes=tuple(range(len(classes))),
        )


class Clean(Protocol):
    family = "clean"

    def apply(self, ds, params, open_target=None):
        return self._base_view(ds, params)


class Noise(Protocol):
    family = "noise"
    usage = "noise30 (any noiseP, P in [0, 100))"

    def parse(self, text):
        m = re.fullmatch(r"noise(?:=|:)?(-?\d+(?:\.\d+)?)", text)
        return {"rate": float(m.group(1))} if m else None

    def id(self, params):
        rate = float(params["rate"])
        return f"noise{rate:g}"

    def apply(self, ds, params, open_target=None):
        rate = float(params["rate"])
        if not 0 <= rate < 100:
            raise ConfigError(f"noise rate {rate:g} is outside [0, 100)")
        view = self._base_view(ds, params)
        k = len(view.classes)
        noisy = generate_noise(view.train, view.clean_train_labels, k, rate,
                               int(params.get("noise_seed", 0)))
        doc = noise_document(view.id, view.train, view.classes, view.clean_train_labels, noisy,
                             {"source": "generated", "rate": rate,
                              "noise_seed": int(params.get("noise_seed", 0))})
        view.noise = NoiseRecord("generated", noisy != view.clean_train_labels, noisy, doc,
                                 document_hash(doc))
        view.train_labels = noisy
        return view


class NoiseFile(Protocol):
    """A user's noisy label list (`name label` per line), e.g. the RAF-DB lists of SCN/RUL/EAC."""

    family = "noise_file"

    usage = "noise_file=PATH"

    def parse(self, text):
        m = re.fullmatch(r"noise_file[=:](.+)", text)
        return {"path": m.group(1)} if m else None

    def id(self, params):
        return f"noisefile:{Path(params['path']).stem}"

    def apply(self, ds, params, open_target=None):
        path = Path(params["path"]).expanduser()
        view = self._base_view(ds, params)
        noisy = read_noise_file(path, ds, view)
        doc = noise_document(view.id, view.train, view.classes, view.clean_train_labels, noisy,
                             {"source": "file", "file": path.name})
        with open(path, "rb") as f:
            doc["file_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
        view.noise = NoiseRecord("file", noisy != view.clean_train_labels, noisy, doc,
                                 document_hash(doc))
        view.train_labels = noisy
        return view


class RealNoise(Protocol):
    """FERPlus trained on FER2013's original labels; the FERPlus majority is the reference.

    The noise is what FER2013's annotators got wrong by the judgement of FERPlus's ten:
    flips are the faces whose two labels disagree. Faces without a match, or whose
    FER2013 duplicates disagree, are left out of training; test is the usual FERPlus test.
    """

    family = "realnoise"
    reads = ("fer2013_root",)

    def apply(self, ds, params, open_target=None):
        from .datasets.fer2013_match import STATUS, fer2013_labels

        if ds.name != "ferplus":
            raise ConfigError(f"protocol realnoise pairs FERPlus's votes with FER2013's "
                              f"original labels; it runs on --dataset ferplus, not {ds.name}")
        view = self._base_view(ds, params)
        match = fer2013_labels(ds, params.get("fer2013_root"))
        match.require_same_faces()
        report = match.report(np.asarray(view.train.labels), view.classes)
        keep = np.flatnonzero(match.matched)
        train = view.train.subset(keep)
        clean = view.clean_train_labels[keep]
        noisy = to_run_labels(match.original[keep], view.classes)
        # Route-independent counts only: the same labels give the same noise hash either way.
        summary = {k: report[k] for k in ("faces", *STATUS)}
        doc = noise_document(view.id, train, view.classes, clean, noisy,
                             {"source": "reference", "reference": "FERPlus majority votes",
                              "noisy_labels": "FER2013 original labels", "match": summary,
                              "per_class": report["per_class"]})
        view.train, view.train_labels, view.clean_train_labels = train, noisy, clean
        view.noise = NoiseRecord("reference", noisy != clean, noisy, doc, document_hash(doc))
        view.record["realnoise"] = {"route": match.route, "source": match.source, **summary,
                                    "reasons": report["reasons"],
                                    "disagreement_rate": report["disagreement_rate"]}
        return view


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
    adapter_native = _native_labels(ds)
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


def _native_labels(ds: Dataset) -> dict[int, str] | None:
    from .plugins import registry

    provided = registry().datasets.get(ds.name)
    return getattr(provided.obj, "native_labels", None) if provided else None


def _label_name(label: str, native: dict[int, str] | None) -> str | None:
    if label.lstrip("-").isdigit():
        return native.get(int(label)) if native else None
    return canonical(label)


class Cross(Protocol):
    """Train on one dataset, test on another over their shared classes."""

    family = "cross"
    reads = ("target", "target_root")
    # The same faces, so a "cross-dataset" score would be a within-dataset one.
    NEVER_PAIRED = ({"fer2013", "ferplus"},)

    def parse(self, text):
        if text == "cross":
            return {}
        m = re.fullmatch(r"cross[=:](.+)", text)
        return {"target": m.group(1)} if m else None

    def id(self, params):
        return f"cross-{params.get('target') or '?'}"

    def apply(self, ds, params, open_target=None):
        target_name = params.get("target")
        if not target_name:
            raise ConfigError("protocol cross needs a target dataset (--target NAME)")
        if {ds.name, target_name} in self.NEVER_PAIRED:
            raise ConfigError(f"{ds.name} and {target_name} hold the same faces and never pair "
                              f"as a cross-dataset protocol")
        if open_target is None:
            raise ConfigError("protocol cross needs a way to open the target dataset")
        target = open_target(target_name, params.get("target_root"))
        if target.name == ds.name and target.root is not None and ds.root is not None and \
                Path(target.root).resolve() == Path(ds.root).resolve():
            raise ConfigError(f"protocol cross: the target is the training dataset itself "
                              f"({ds.name} at {ds.root}); its own test split is `clean`")
        shared = shared_classes(ds.classes, target.classes)
        if not shared:
            raise ConfigError(f"{ds.name} and {target_name} share no class")
        view = self._base_view(ds, params)
        # CK+ and JAFFE are small lab sets: all of them is the test set.
        test_split = "all" if "all" in target.splits else target.test
        test = target.split(test_split)
        n_all = len(test)
        keep = np.flatnonzero(np.isin(np.asarray(test.labels),
                                      [CLASSES.index(c) for c in shared]))
        test = test.subset(keep)
        view.test = test
        view.test_labels = to_run_labels(test, view.classes)
        view.scored_classes = tuple(view.classes.index(c) for c in shared)
        view.record["cross"] = {"target": target_name, "target_split": test_split,
                                "shared_classes": list(shared),
                                "target_fingerprint": test.fingerprint,
                                "dropped_test_samples": int(n_all - len(keep))}
        return view


def finish_view(view: ProtocolView, params: dict, leaked_test: np.ndarray | None = None
                ) -> ProtocolView:
    """Steps every family shares: a held-out validation share, test dedup, extras policy."""
    view = dataclasses.replace(view, record=dict(view.record))  # the caller's view stays intact
    frac = float(params.get("val_fraction", 0) or 0)
    if frac:
        if not 0 < frac < 1:
            raise ConfigError(f"val_fraction {frac:g} must lie in (0, 1), or be 0 for no "
                              f"validation split")
        hold = _stratified_holdout(view.train_labels, frac, (view.train.fingerprint, frac))
        keep = np.flatnonzero(~hold)
        held = np.flatnonzero(hold)
        view.val, view.val_labels = view.train.subset(held), view.train_labels[held]
        if view.noise is not None:
            view.record["val_flipped"] = int(view.noise.flipped[held].sum())
            view.noise = dataclasses.replace(view.noise, flipped=view.noise.flipped[keep],
                                             noisy=view.noise.noisy[keep])
        view.train = view.train.subset(keep)
        view.train_labels = view.train_labels[keep]
        view.clean_train_labels = view.clean_train_labels[keep]
        view.record["val_fraction"] = frac
    if leaked_test is not None and len(leaked_test):
        keep = np.setdiff1d(np.arange(len(view.test)), leaked_test)
        view.test, view.test_labels = view.test.subset(keep), view.test_labels[keep]
        view.record["dedup_test_removed"] = int(len(leaked_test))
    view.withhold_label_extras = view.noise is not None and not params.get("allow_label_extras")
    view.record["label_extras_withheld"] = view.withhold_label_extras
    return view


def parse_protocol(text: str, families: dict[str, "Protocol"]) -> tuple[str, dict]:
    """`noise30`, `noise_file=PATH`, `cross=ckplus`, `clean` → (family, params)."""
    from .errors import unknown_name

    for name, fam in families.items():
        params = fam.parse(text)
        if params is not None:
            return name, params
    bare = families.get(text.rstrip("=:"))
    if bare is not None and getattr(bare, "usage", ""):
        raise ConfigError(f"protocol {text.rstrip('=:')} needs a value: --protocol {bare.usage}")
    raise unknown_name("protocol", text, list(families) + ["noise10", "noise20", "noise30"])


@hookimpl
def ferbench_register_protocols(register):
    for fam in (Clean(), Noise(), NoiseFile(), RealNoise(), Cross()):
        register(fam.family, fam)
