"""`ferbench data check`: what a dataset root holds, in the canonical label space, and its flaws."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .datasets.audit import audit
from .datasets.base import open_dataset
from .errors import ConfigError, DataError
from .official import compare_official
from .plugins import registry


def check_dataset(name: str, root, layout=None, options=None, do_audit=True,
                  image_size=48, show_progress=None, fer2013_root=None) -> dict:
    """Open a dataset and describe it: layout, counts per split and class, extras, problems,
    and how the counts compare with the official ones where the adapter declares them.

    With `fer2013_root` (a dataset whose adapter has `original_labels`: FERPlus), also the
    match of its training faces to FER2013's original labels, as protocol realnoise uses it.
    """
    adapter = registry().get("datasets", name)
    ds = open_dataset(adapter, root, layout, options)
    original_labels = getattr(adapter, "original_labels", None)
    if fer2013_root is not None and original_labels is None:
        raise ConfigError(f"--fer2013-root matches FERPlus faces; dataset {name} is not FERPlus")
    splits = {}
    for split, samples in ds.splits.items():
        splits[split] = {"total": len(samples), "classes": samples.class_counts()}
    combined = {}
    for cname, members in ds.combined.items():
        counts = {c: sum(splits[m]["classes"][c] for m in members) for c in ds.classes}
        combined[cname] = {"splits": list(members), "total": sum(counts.values()),
                           "classes": counts}
    train = ds.splits[ds.train]
    extras = {k: {"shape": list(np.shape(v)),
                  "kind": "label-carrying" if k in train.label_extras else "image-derived"}
              for k, v in train.extras.items()}
    out = {
        "dataset": name, "root": str(ds.root) if ds.root else None, "layout": ds.layout,
        "options": ds.options, "classes": list(ds.classes),
        "roles": {"train": ds.train, "val": ds.val, "test": ds.test},
        "notes": list(ds.notes), "splits": splits, "combined": combined, "extras": extras,
        "fingerprints": {s: v.fingerprint for s, v in ds.splits.items()},
        # A subset or another copy is reported here, never refused.
        "official": compare_official(getattr(adapter, "official_counts", None), ds.layout,
                                     ds.options, {**splits, **combined}, ds.notes),
    }
    if fer2013_root is not None:
        match = original_labels(ds, fer2013_root, show_progress=show_progress)
        match.require_same_faces()
        out["fer2013_match"] = match.report(train.labels, ds.classes)
    if do_audit:
        report = audit(ds, image_size, show_progress=show_progress)
        out["audit"] = report.summary()
        out["audit_details"] = {"cross_split": report.cross_split,
                                "conflicting": report.conflicting,
                                "near_blank": report.near_blank}
    return out


def check_report_path(path: str | Path) -> Path:
    """Refuse a report path whose folder is missing before the check's long work starts."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, "is a folder; --report takes a file name")
    if not path.parent.is_dir():
        raise DataError(path.parent, "report folder does not exist")
    return path


def write_report(report: dict, path: str | Path) -> None:
    """Write the report as JSON, atomically (a failed write leaves nothing behind)."""
    path = check_report_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise DataError(path, f"cannot write report ({e.strerror})") from None
        raise
