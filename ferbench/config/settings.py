"""The one gate for config values: each key's allowed choices or range, declared beside the key.

A config dataclass declares a key with `setting(default, choices=...)` or
`setting(default, low=..., high=...)`; `check_settings` refuses a value outside
them with one line naming the key. Method configs are checked when they are
built (MethodConfig.__post_init__), the engine section when a run is composed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError


def setting(default: Any = dataclasses.MISSING, *, choices: tuple | None = None,
            low: float | None = None, high: float | None = None, default_factory=None,
            added: bool = False):
    """A dataclass field with its allowed values recorded for `check_settings`.

    `added`: a key a config gained after runs of it were stored, whose default does what
    those runs did; at that default it stays out of the run's hash (`added_at_default`), so
    the stored runs keep their keys and are still found, skipped and grouped."""
    meta = {"choices": tuple(choices) if choices else None, "low": low, "high": high,
            "added": added}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_settings(config, prefix: str = "", cls=None) -> None:
    """Refuse the first value of `config` (a dataclass instance, or a mapping read as `cls`)
    outside what its field declares: `optimizer='x': must be one of adamw, sgd, adam`."""
    cls = cls or type(config)
    for f in dataclasses.fields(cls):
        value = config[f.name] if isinstance(config, dict) or not dataclasses.is_dataclass(
            config) else getattr(config, f.name)
        name = f"{prefix}{f.name}"
        _check_numbers(name, value, _default_of(f))
        meta = f.metadata
        if not meta:
            continue
        choices = meta.get("choices")
        if choices:
            # A list key (engine.loggers) takes any of its choices: each item is checked.
            listed = isinstance(value, Sequence) and not isinstance(value, str)
            for item in value if listed else [value]:
                if item not in choices:
                    raise ConfigError(f"{name}={item!r}: must be {_alternatives(choices)}")
        low, high = meta.get("low"), meta.get("high")
        if (low is None and high is None) or value is None:   # None: "not set", never a number
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            bound = bound_text(low, high)
            raise ConfigError(f"{name}={value!r}: must be "
                              f"{'in ' if bound.startswith('[') else ''}{bound}")


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _check_numbers(name: str, value, default) -> None:
    """No key takes NaN or infinity (a NaN slips past every `>=` bound and surfaces as a
    loss of nan epochs later); a list whose default holds numbers holds numbers of that
    kind (`calib_hidden=[a]` is refused here, not as a tensor error inside the model)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r}: must be a finite number")
    listed = isinstance(value, Sequence) and not isinstance(value, str)
    if not listed or not isinstance(default, Sequence) or isinstance(default, str) or not default:
        return
    if all(_is_int(d) for d in default):
        kind, ok = "integers", _is_int
    elif all(_is_int(d) or isinstance(d, float) for d in default):
        kind, ok = "numbers", lambda v: _is_int(v) or (isinstance(v, float) and math.isfinite(v))
    else:
        return
    if not all(ok(v) for v in value):
        raise ConfigError(f"{name}={list(value)!r}: must be a list of {kind}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def added_at_default(cls) -> dict[str, Any]:
    """The keys `cls` declares `added`, with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.metadata.get("added") and f.default is not dataclasses.MISSING}


def choices_of(cls, key: str) -> tuple:
    """The choices a config dataclass declares for `key` (empty where it declares none)."""
    field = next((f for f in dataclasses.fields(cls) if f.name == key), None)
    return tuple((field.metadata.get("choices") or ()) if field else ())


def bound_text(low, high) -> str:
    """A declared range as people write it: `>= 0`, `<= 1`, `[0.0, 1.0]`; "" for none."""
    if low is not None and high is not None:
        return f"[{low}, {high}]"
    return f">= {low}" if low is not None else f"<= {high}" if high is not None else ""


def _alternatives(choices) -> str:
    names = [str(c) for c in choices]
    return f"{names[0]} or {names[1]}" if len(names) == 2 else f"one of {', '.join(names)}"
