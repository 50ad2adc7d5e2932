"""Registers the built-in methods through the same hook a plugin uses."""

from ..hookspecs import hookimpl


@hookimpl
def ferbench_register_methods(register):
    from .baseline import Baseline

    register("baseline", Baseline)
