"""ferbench: a plugin-based benchmark harness for facial expression recognition under label noise.

The public surface for plugin authors is this module: `hookimpl`, the method
contract (`Method`, `MethodConfig`, `Prediction`, `OptimizerSpec`, `Phase`,
`PerSample`), `RunContext`, `split_epochs` (stage lengths as fractions of the
epochs), `capped_per_class` (a fixed training subset), `default_optimizer` (the
engine's optimiser and schedule for one network), `setting` (a config key with its
choices or range, checked once), `View` (an augmentation view a plugin registers), the
errors a plugin raises for bad input, and `__version__`. A dataset plugin also uses
`ferbench.datasets` (`DatasetAdapter`, `Dataset`, `Samples`, `FileSource`,
`ArraySource`) and `ferbench.labels` (`CLASSES`, `canonical`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .data.views import View, view_name
from .errors import ConfigError, DataError, FerbenchError
from .hookspecs import hookimpl

__version__ = "0.1.0"

# These need torch, which takes seconds to import: a plugin's hook module needs only
# `hookimpl`, so they load on first use (PEP 562) instead of with the package.
_LAZY = {"Method": "method", "MethodConfig": "method", "Prediction": "method",
         "OptimizerSpec": "method", "Phase": "method", "PerSample": "method",
         "split_epochs": "method", "capped_per_class": "method", "RunContext": "context",
         "setting": "config.settings", "default_optimizer": "optim"}

if TYPE_CHECKING:
    from .config.settings import setting
    from .context import RunContext
    from .method import (Method, MethodConfig, OptimizerSpec, PerSample, Phase, Prediction,
                         capped_per_class, split_epochs)
    from .optim import default_optimizer

__all__ = ["hookimpl", "Method", "MethodConfig", "Prediction", "OptimizerSpec", "Phase",
           "PerSample", "RunContext", "split_epochs", "capped_per_class", "default_optimizer",
           "setting", "View", "view_name", "FerbenchError", "ConfigError", "DataError", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
