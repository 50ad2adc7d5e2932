"""Protocols: clean, generated noise, a user's noise file, cross-dataset."""

from .hookspecs import hookimpl


@hookimpl
def ferbench_register_protocols(register):
    pass
