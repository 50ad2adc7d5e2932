"""Structured run configs in hydra's ConfigStore, composed with the compose API.

The user never writes hydra: command-line flags and `key=value` overrides
become compose overrides. A bare key that the method's config has
(`lr=0.01`) means `method.lr`; dotted keys address any part of the run config.
Order of precedence: the method's Config defaults < the preset < flags <
overrides.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from ..errors import ConfigError, unknown_name
from ..tracking import LOGGER_NAMES
from .settings import check_settings, setting


@dataclass
class DataConfig:
    name: str = "synthfer"
    root: Optional[str] = None
    layout: Optional[str] = None
    options: dict = field(default_factory=dict)


@dataclass
class ProtocolConfig:
    # Recorded from the protocol's parameters (the noise seed is chosen with the protocol,
    # --noise-seed or protocol.noise_seed=, before any method's config is composed).
    noise_seed: int = 0
    val_fraction: float = 0.0
    dedup_test: bool = False
    allow_label_extras: bool = False


@dataclass
class EngineConfig:
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    precision: str = setting("auto", choices=("auto", "fp32", "bf16"))
    eval_every: int = setting(1, low=0)
    # final | val (test figures of the best validation epoch)
    select: str = setting("final", choices=("final", "val"))
    threads: int = setting(0, low=0)  # 0: torch's default
    channels_last: str = setting("auto", choices=("auto", "on", "off"))
    compile: bool = False        # torch.compile the model for training steps
    # Where each epoch's figures go besides the run's history file. How a run is watched is
    # not what it computes: the runner keeps this key out of the recorded config and hash.
    loggers: List[str] = setting(default_factory=list, choices=LOGGER_NAMES)


@dataclass
class RunConfig:
    method: Any = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


_OVERRIDE = re.compile(r"^\+?([A-Za-z_][\w.\-]*)=(.*)$", re.S)


def _quote(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_quote(v) for v in value) + "]"
    # Hydra unescapes backslashes only before a quote (and before the closing quote).
    text = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", str(value))
    text = re.sub(r"(\\+)$", lambda m: m[1] * 2, text)
    return "'" + text + "'"


def compose_run(method_name: str, method_cls, preset: str, flags: dict[str, Any],
                overrides: list[str]) -> DictConfig:
    """The resolved run config for one method: defaults, preset, flags, then overrides."""
    from hydra import compose, initialize
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    presets = getattr(method_cls, "presets", {}) or {}
    if preset not in presets:
        raise unknown_name(f"preset of method {method_name}", preset, presets or ["quick"])
    base = OmegaConf.structured(method_cls.Config)
    try:
        node = OmegaConf.merge(base, presets[preset])
    except Exception as e:
        raise ConfigError(f"preset {preset!r} of method {method_name} does not fit its Config: "
                          f"{_first_line(e)}") from None
    cs = ConfigStore.instance()
    cs.store(name="ferbench_run", node=RunConfig)
    option = f"{_safe(method_name)}__{preset}"
    cs.store(group="method", name=option, node=node)
    method_keys = {f.name for f in dataclasses.fields(method_cls.Config)}
    # A key whose default is a mapping (uafer's class_words) takes entries of the user's
    # choosing: `class_words.happiness=joy` adds one, `class_words={happiness: joy}` merges.
    free_maps = {f"method.{f.name}" for f in dataclasses.fields(method_cls.Config)
                 if f.default_factory is not dataclasses.MISSING
                 and isinstance(f.default_factory(), dict)}
    ov = [f"+method={option}"]
    for key, value in flags.items():
        if value is not None:
            prefix = "++" if key.startswith("data.options.") else ""
            ov.append(f"{prefix}{key}={_quote(value)}")
    for text in overrides:
        m = _OVERRIDE.match(text)
        if not m:
            raise ConfigError(f"malformed override {text!r}: expected KEY=VALUE")
        key, value = m.groups()
        if f"method.{key.split('.')[0]}" in free_maps:
            key = f"method.{key}"
        free = any(key == k or key.startswith(f"{k}.") for k in free_maps)
        if free:
            pass
        elif "." not in key:
            if key in method_keys:
                key = f"method.{key}"
            else:
                raise unknown_name("config key", key, sorted(method_keys)
                                   + ["data.*", "engine.*", "protocol.*"])
        elif not key.startswith("data.options.") and key not in _paths(method_keys):
            raise unknown_name("config key", key, _paths(method_keys))
        # Dataset options are free-form: add or replace ("++"), since none exist by default.
        prefix = "++" if key.startswith("data.options.") or free else ""
        ov.append(f"{prefix}{key}={value}")
    GlobalHydra.instance().clear()
    try:
        with initialize(version_base=None, config_path=None):
            cfg = compose(config_name="ferbench_run", overrides=ov)
    except Exception as e:
        raise ConfigError(f"cannot apply overrides: {_first_line(e)}{_why(e)}") from None
    check_settings(cfg.engine, "engine.", EngineConfig)
    return cfg


def _why(e: BaseException) -> str:
    """The value error under hydra's "Error merging override", e.g. not a valid bool."""
    from omegaconf.errors import ValidationError

    seen = e.__cause__ or e.__context__
    while seen is not None:
        if isinstance(seen, ValidationError):
            return f" ({_first_line(seen)})"
        seen = seen.__cause__ or seen.__context__
    return ""


def _paths(method_keys) -> list[str]:
    """Every dotted key of a run config, for suggestions."""
    out = [f"method.{k}" for k in method_keys]
    for section, cls in (("data", DataConfig), ("protocol", ProtocolConfig),
                         ("engine", EngineConfig)):
        out += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return sorted(out)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _safe(name: str) -> str:
    return re.sub(r"[^\w]", "_", name)


def to_method_config(method_cls, cfg: DictConfig):
    """The method's Config dataclass instance from the composed config."""
    values = OmegaConf.to_container(cfg.method, resolve=True)
    return method_cls.Config(**values)


def as_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
