"""The protocol contract that every family, built-in or a plugin's, builds on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..datasets.base import Dataset
from ..datasets.samples import Samples
from ..errors import ConfigError, unknown_name
from ..labels import CLASSES
from .noise import NoiseRecord, derive_seed


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


def _stratified_holdout(labels: np.ndarray, fraction: float, seed_parts) -> np.ndarray:
    """A deterministic, stratified boolean mask of the share `fraction` of each class."""
    rng = np.random.default_rng(derive_seed("val", *seed_parts))
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        take = int(np.floor(fraction * len(idx) + 0.5))
        mask[rng.choice(idx, size=take, replace=False)] = True
    return mask


class Protocol:
    """A protocol family. `parse` reads command-line forms; `apply` builds the view."""

    family = ""
    defaults: ClassVar[dict[str, Any]] = {}
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
        view.record["dedup_test_removed"] = len(leaked_test)
    view.withhold_label_extras = view.noise is not None and not params.get("allow_label_extras")
    view.record["label_extras_withheld"] = view.withhold_label_extras
    return view


def parse_protocol(text: str, families: dict[str, Protocol]) -> tuple[str, dict]:
    """`noise30`, `noise_file=PATH`, `cross=ckplus`, `clean` → (family, params)."""
    for name, fam in families.items():
        params = fam.parse(text)
        if params is not None:
            return name, params
    bare = families.get(text.rstrip("=:"))
    if bare is not None and getattr(bare, "usage", ""):
        raise ConfigError(f"protocol {text.rstrip('=:')} needs a value: --protocol {bare.usage}")
    raise unknown_name("protocol", text, list(families) + ["noise10", "noise20", "noise30"])
