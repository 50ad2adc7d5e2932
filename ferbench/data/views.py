"""Augmentation views as plugins provide them: the `View` type, and the built-in views
(none, weak, flip, strong) registered through the hook any plugin uses.

Nothing here imports torch, so a plugin's hook module can build its `View` without
loading it; the built-in view functions (`ferbench.data.augment`) load when the
registry calls the hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..hookspecs import hookimpl


@dataclass(frozen=True)
class View:
    """An augmentation view: its batch function, default parameters and their ranges.

    `fn(images, gen, **params)` turns uint8 [B, H, W, C] into float [B, C, H, W] in
    [0, 1], drawing its random numbers from the torch generator `gen`. `defaults`
    maps every parameter to its default, whose type is the type a config must give;
    `ranges` maps a parameter to the (low, high) values it accepts, both included
    (None leaves that side open).
    """

    fn: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"View needs a function, got {type(self.fn).__name__}")
        unknown = sorted(set(self.ranges) - set(self.defaults))
        if unknown:
            raise ValueError(f"View ranges name parameters without a default: {unknown}")
        # Copies: the caller's dicts may change later; a registered view must not.
        object.__setattr__(self, "defaults", dict(self.defaults))
        object.__setattr__(self, "ranges", {k: tuple(v) for k, v in self.ranges.items()})


def view_name(spec) -> str:
    """The name of a configured view, given as a name or (name, params): the key its images
    have in a batch's `views`."""
    return spec if isinstance(spec, str) else spec[0]


# A pad over half the size would reflect twice; erase is a probability.
_PAD, _P = (0.0, 0.5), (0.0, 1.0)


@hookimpl
def ferbench_register_views(register):
    from . import augment as A

    # The defaults' order is the order of a resolved view's parameters in the stored config.
    register("none", View(A.view_none))
    register("weak", View(A.view_weak, {"pad": 0.125, "flip": True, "erase": 0.0},
                          {"pad": _PAD, "erase": _P}))
    register("flip", View(A.view_flip))
    register("strong", View(
        A.view_strong,
        {"pad": 0.125, "degrees": 15.0, "scale": 0.1, "shear": 8.0, "brightness": 0.4,
         "contrast": 0.4, "ops": 2, "erase": 0.5},
        {"pad": _PAD, "erase": _P, "degrees": (0.0, 180.0), "scale": (0.0, 0.9),
         "shear": (0.0, 60.0), "brightness": _P, "contrast": _P, "ops": (0, 6)}))
