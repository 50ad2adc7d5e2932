"""ferbench-uafer: registers the method `uafer` (UA-FER, Neurocomputing 2024)."""

from ferbench import hookimpl


@hookimpl
def ferbench_register_methods(register):
    from .method import UAFER

    register("uafer", UAFER)
