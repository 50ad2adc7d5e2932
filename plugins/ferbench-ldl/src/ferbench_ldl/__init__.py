"""ferbench-ldl: label-distribution learning methods `ldlva` and `ldl-alsg`, and the
auxiliary-space hook they share (`ferbench_ldl_register_spaces`)."""

from ferbench import hookimpl

from .spaces import AuxSpace

__all__ = ["AuxSpace"]


@hookimpl
def ferbench_add_hookspecs(pluginmanager):
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def ferbench_register_methods(register):
    from .alsg import LDLALSG
    from .ldlva import LDLVA

    register("ldlva", LDLVA)
    register("ldl-alsg", LDLALSG)


@hookimpl
def ferbench_ldl_register_spaces(register):
    # The plugin's own spaces come in through the hook a third party uses.
    from .spaces import builtin_spaces

    for name, space in builtin_spaces().items():
        register(name, space)
