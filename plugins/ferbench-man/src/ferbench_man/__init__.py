"""ferbench-man: registers the method `man` (Mining Ambiguity and Noise, PRL 2022)."""

from ferbench import hookimpl


@hookimpl
def ferbench_register_methods(register):
    from .method import MAN

    register("man", MAN)
