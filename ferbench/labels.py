"""The canonical label space: eight emotions in FERPlus column order, mapped by name."""

from __future__ import annotations

import re

CLASSES: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)
BASIC7: tuple[str, ...] = CLASSES[:7]

# Every spelling users have on disk, normalised by `_key` (lowercase, letters only).
_ALIASES = {
    "neutral": "neutral", "neutrality": "neutral", "calm": "neutral", "ne": "neutral",
    "happy": "happiness", "happiness": "happiness", "happ": "happiness", "joy": "happiness",
    "ha": "happiness", "hap": "happiness",
    "surprise": "surprise", "surprised": "surprise", "surprize": "surprise", "su": "surprise",
    "sur": "surprise",
    "sad": "sadness", "sadness": "sadness", "sa": "sadness",
    "angry": "anger", "anger": "anger", "an": "anger", "ang": "anger", "mad": "anger",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust", "di": "disgust",
    "dis": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear",
    "contempt": "contempt", "contemptuous": "contempt", "co": "contempt",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def canonical(name: str) -> str | None:
    """The canonical class name for any spelling, or None when it is not an emotion."""
    return _ALIASES.get(_key(name))


def class_index(name: str) -> int | None:
    """Index in `CLASSES` of a class given by any spelling, or None."""
    c = canonical(name)
    return None if c is None else CLASSES.index(c)


def indices(names) -> list[int]:
    """Canonical indices of canonical class names (no aliases: these are already canonical)."""
    return [CLASSES.index(n) for n in names]


def shared_classes(a, b) -> tuple[str, ...]:
    """Classes in both label spaces, in canonical order."""
    return tuple(c for c in CLASSES if c in a and c in b)


def extra_distributions(name: str, values, classes):
    """A label-carrying extra as one distribution over `classes` per sample, float64 [N, K]:
    FERPlus `votes` ([N, 10] or [N, 8] in canonical column order, unknown and NF dropped)
    or an array already over the run's classes ([N, K], synthfer's `distribution`), rows
    normalised. A row with no mass on the run's classes is NaN. ValueError on another shape.
    """
    import numpy as np

    from .metrics import votes_to_distribution

    arr = np.asarray(values.cpu() if hasattr(values, "cpu") else values, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name!r} is {list(arr.shape)}, not one row of class scores per sample")
    if name == "votes" and arr.shape[1] in (8, 10):
        return votes_to_distribution(arr, indices(classes))
    if arr.shape[1] != len(classes):
        raise ValueError(f"{name!r} has {arr.shape[1]} columns, the run has {len(classes)} "
                         f"classes")
    total = arr.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, arr / np.where(total > 0, total, 1.0), np.nan)
