"""The dataset adapter contract and `open_dataset`, which finds a layout and reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, unknown_name
from .samples import NumberedIds, Samples


@dataclass
class Dataset:
    """A dataset read from one root: its splits and which split plays which role."""

    name: str
    root: Path | None
    layout: str
    classes: tuple[str, ...]
    splits: dict[str, Samples]
    train: str = "train"
    test: str = "test"
    val: str | None = None
    combined: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    # What read it, so a protocol asks the adapter (native codes, same faces) and not a name.
    adapter: DatasetAdapter | None = field(default=None, repr=False, compare=False)

    def split(self, name: str) -> Samples:
        if name not in self.splits:
            raise unknown_name(f"split of {self.name}", name, self.splits)
        return self.splits[name]


class DatasetAdapter:
    """Reads one dataset in every layout its users have.

    Subclasses set `name`, `layouts` (name → one-line description) and `options`
    (name → default; the default's type converts strings from the command line),
    and implement `detect` and `open`. Every other member is optional: a fact about the
    dataset that the harness reads here rather than deciding by the dataset's name.
    """

    name: str = ""
    description: str = ""
    layouts: dict[str, str] = {}
    options: dict[str, Any] = {}
    needs_root: bool = True
    # Grey datasets are cached with one channel (repeated to three on the device).
    grey: bool = False
    # Integer codes of the dataset's own label files → canonical names, for users' noise files.
    native_labels: dict[int, str] | None = None
    # Datasets holding the same faces (FERPlus relabelled FER2013's): a "cross-dataset" score
    # between them would be a within-dataset one, so protocol cross refuses the pair.
    same_faces_as: tuple[str, ...] = ()
    # The method preset a run uses without --preset: real data gets the papers' setting.
    default_preset: str = "paper"
    # `original_labels(ds, root, show_progress=None)`: for each training face of `ds`, the
    # label another labelling of the same faces gave it (FERPlus: FER2013's, read from `root`),
    # with `matched`, `original`, `require_same_faces()` and `report(reference, classes)` as
    # `fer2013_match.Fer2013Labels` has them. Protocol realnoise and `data check
    # --fer2013-root` need it; None where the dataset has no such second labelling.
    original_labels: Callable[..., Any] | None = None

    def detect(self, root: Path) -> list[str]:
        """The layouts whose marker files exist under `root`."""
        raise NotImplementedError

    def open(self, root: Path | None, layout: str, options: dict[str, Any]) -> Dataset:
        """Read every split; raise DataError naming the file for anything malformed."""
        raise NotImplementedError


def resolve_options(adapter: DatasetAdapter, given: dict[str, Any] | None) -> dict[str, Any]:
    """The adapter's options with the user's values, converted to each default's type."""
    out = dict(adapter.options)
    for key, value in (given or {}).items():
        key = key.replace("-", "_")
        if key not in adapter.options:
            raise unknown_name(f"option of dataset {adapter.name}", key, adapter.options)
        default = adapter.options[key]
        out[key] = _convert(adapter.name, key, value, default)
    return out


def _convert(dataset, key, value, default):
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return type(default)(value)
    except ValueError:
        raise ConfigError(
            f"option {key}={value!r} of dataset {dataset}: expected {type(default).__name__}"
        ) from None


def open_dataset(adapter: DatasetAdapter, root: str | Path | None, layout: str | None = None,
                 options: dict[str, Any] | None = None, root_flag: str = "--data-root"
                 ) -> Dataset:
    """Detect (or check) the layout under `root` and read the dataset; errors about the root
    name `root_flag`, the flag that gave it."""
    opts = resolve_options(adapter, options)
    if layout is not None and layout not in adapter.layouts:
        raise unknown_name(f"layout of dataset {adapter.name}", layout, adapter.layouts)
    if adapter.needs_root:
        if root is None:
            raise ConfigError(f"dataset {adapter.name} needs {root_flag}")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(root, "data root does not exist or is not a folder")
        if layout is None:
            found = adapter.detect(root)
            if not found:
                expected = "; ".join(f"{k}: {v}" for k, v in adapter.layouts.items())
                raise DataError(root, f"no {adapter.name} layout found (expected {expected})")
            if len(found) > 1:
                raise DataError(root, f"ambiguous {adapter.name} layout: {', '.join(found)} all "
                                      f"match; choose one with --layout")
            layout = found[0]
    else:
        if root is not None:
            # A folder that is never read would still change the run's key.
            raise ConfigError(f"dataset {adapter.name} is not read from disk: drop "
                              f"{root_flag} {root}")
        layout = layout or next(iter(adapter.layouts))
    ds = adapter.open(root, layout, opts)
    _check_read(ds, root or adapter.name)
    ds.options = opts
    ds.adapter = adapter
    return ds


def _check_read(ds: Dataset, where) -> None:
    """What every command relies on, whichever adapter (built-in or a plugin's) read it."""
    for role in ("train", "test", "val"):
        name = getattr(ds, role)
        if name is not None and name not in ds.splits:
            found = ", ".join(ds.splits) or "none"
            raise DataError(where, f"no {role} split {name!r} found (splits read: {found})")
    for split_name, samples in ds.splits.items():
        if len(samples) == 0:
            raise DataError(where, f"split {split_name!r} is empty")
        if isinstance(samples.ids, NumberedIds):
            continue  # distinct by construction
        if len(set(samples.ids)) < len(samples.ids):
            seen = set()
            twice = next(i for i in samples.ids if i in seen or seen.add(i))
            raise DataError(where, f"split {split_name!r} lists {twice!r} twice: an id names "
                                   f"one face (noise files and results refer to faces by id)")
