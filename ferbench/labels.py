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
