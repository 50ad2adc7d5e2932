"""`RunRecord`: one run's result file (schema 1, docs/results.md) as a typed value.

The runner writes a RunRecord and the leaderboard reads RunRecords; both go
through `to_json`/`from_json`, so the file's shape is defined here once.
Reading is lenient where the leaderboard can still use a record (a section of
the wrong type reads as empty) and strict where it cannot (no key, no protocol).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError
from .runkey import RunKey

SCHEMA_VERSION = 1
KEY_FIELDS = tuple(f.name for f in dataclasses.fields(RunKey))
# Sections the leaderboard reads as mappings: anything else in a stored file reads as {}.
_MAPPINGS = ("metrics", "per_class", "dataset", "config", "method", "noise_summary_epochs",
             "distributions", "loggers", "code")
# The same for sections read as lists, and as a mapping or nothing.
_LISTS = ("weights", "prediction_extras")
_OPTIONAL_MAPPINGS = ("members", "training_subset")


@dataclass
class RunRecord:
    """Every field of a result file, in the file's order (docs/results.md says what each holds)."""

    schema: int = SCHEMA_VERSION
    key: RunKey | None = None
    protocol: dict = field(default_factory=dict)
    method: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)
    precision: str | None = None
    weights: list = field(default_factory=list)
    resumed_from_epoch: int | None = None
    wall_time_s: float | None = None
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    oracle: dict | None = None
    selected: dict | None = None
    per_class: dict = field(default_factory=dict)
    confusion: list | None = None
    classes_scored: list | None = None
    reliability: dict | None = None
    rejection_curve: dict | None = None
    ambiguity: dict | None = None
    noise_detection: dict | None = None
    noise_summary: dict | None = None
    method_results: dict = field(default_factory=dict)
    command: str | None = None
    # Added after the first records were written: absent (defaults) in older files.
    noise_summary_epochs: dict = field(default_factory=dict)
    distributions: dict = field(default_factory=dict)
    members: dict | None = None
    prediction_extras: list = field(default_factory=list)
    training_subset: dict | None = None
    history_file: str | None = None     # the JSON-lines history beside the record, by name
    loggers: dict = field(default_factory=dict)     # optional logger name → where it wrote
    code: dict = field(default_factory=dict)        # distribution → {commit, dirty} | None
    started_at: str | None = None       # ISO 8601, UTC
    finished_at: str | None = None
    # Where the record was read from; not part of the file.
    path: str | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        """The file's content: every field but `path`, the key as a mapping."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "path"}
        out["key"] = self.key.as_dict() if self.key is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict, path: str | None = None) -> "RunRecord":
        """A record from a stored file's content; a DataError naming `path` if it has no
        usable key or protocol."""
        key = data.get("key") if isinstance(data, dict) else None
        if not isinstance(key, dict) or any(f not in key for f in KEY_FIELDS) \
                or not isinstance(data.get("protocol"), dict):
            raise DataError(path or "result", "record lacks key fields or protocol")
        known = {f.name for f in dataclasses.fields(cls)} - {"key", "path"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for name in _MAPPINGS:
            if not isinstance(values.get(name), dict):
                values[name] = {}
        for name in _LISTS:
            if not isinstance(values.get(name), list):
                values[name] = []
        for name in _OPTIONAL_MAPPINGS:
            if not isinstance(values.get(name), dict):
                values[name] = None
        return cls(**values, key=RunKey(**{f: _key_part(f, key[f]) for f in KEY_FIELDS}),
                   path=path)


def _key_part(name: str, value):
    """Key fields as the key holds them: text, and the seed a whole number where it is one."""
    if name == "seed":
        try:
            return int(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)
