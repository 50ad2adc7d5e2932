"""The one gate for config values, on a method's own config: what a plugin author declares
beside a key is what a user's `KEY=VALUE` is held to."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ferbench.config.settings import setting
from ferbench.errors import ConfigError
from ferbench.method import MethodConfig


@dataclass
class SketchConfig(MethodConfig):
    hidden: list = field(default_factory=lambda: [64, 32])      # layer widths
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # shares of the epochs
    names: list = field(default_factory=lambda: ["a"])
    temperature: float = 1.0                                     # no declared range
    dims: int | None = setting(None, low=1)                      # None: all of them


@pytest.mark.parametrize("values,problem", [
    ({"temperature": float("nan")}, "temperature=nan: must be a finite number"),
    ({"temperature": float("inf")}, "temperature=inf: must be a finite number"),
    ({"hidden": ["a"]}, "hidden=['a']: must be a list of integers"),
    ({"hidden": [1.5]}, "hidden=[1.5]: must be a list of integers"),
    ({"hidden": [True]}, "hidden=[True]: must be a list of integers"),
    ({"milestones": ["a"]}, "milestones=['a']: must be a list of numbers"),
    ({"milestones": [float("nan")]}, "milestones=[nan]: must be a list of numbers"),
])
def test_a_value_of_the_wrong_kind_is_refused_naming_the_key(values, problem):
    with pytest.raises(ConfigError) as err:
        SketchConfig(**values)
    assert str(err.value) == problem


def test_values_of_the_declared_kind_pass():
    c = SketchConfig(hidden=[8], milestones=[1, 0.5], names=["b", 3], temperature=-2.0)
    assert c.hidden == [8] and c.milestones == [1, 0.5]


def test_a_ranged_key_left_unset_is_not_held_to_its_range():
    assert SketchConfig(dims=None).dims is None
    with pytest.raises(ConfigError, match="dims=0: must be >= 1"):
        SketchConfig(dims=0)
