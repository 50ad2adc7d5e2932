"""The core protocol families (clean, noise, noise_file, cross), registered as a plugin's are."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..datasets.base import Dataset
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..labels import CLASSES, shared_classes
from ..runkey import file_digest
from .base import Protocol, to_run_labels
from .noise import generate_noise, noise_document, read_noise_file, with_noisy_labels


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
        return with_noisy_labels(view, "generated", noisy, doc)


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
        doc["file_sha256"] = file_digest(path)
        return with_noisy_labels(view, "file", noisy, doc)


class Cross(Protocol):
    """Train on one dataset, test on another over their shared classes."""

    family = "cross"
    reads = ("target", "target_root")

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
        if _hold_same_faces(ds, target_name):
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


def _hold_same_faces(ds: Dataset, target_name: str) -> bool:
    """Whether either adapter names the other in `same_faces_as`: then a cross-dataset score
    would be a within-dataset one. Asked of the registered adapter, so a refused target is
    never read."""
    from ..plugins import registry

    try:
        target = registry().get("datasets", target_name)
    except ConfigError:
        target = None  # opening it reports what is wrong with the name
    return (target_name in (getattr(ds.adapter, "same_faces_as", None) or ())
            or ds.name in (getattr(target, "same_faces_as", None) or ()))


@hookimpl
def ferbench_register_protocols(register):
    for fam in (Clean(), Noise(), NoiseFile(), Cross()):
        register(fam.family, fam)
