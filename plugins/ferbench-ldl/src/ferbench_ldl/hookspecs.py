"""The plugin's own hook: another package adds an auxiliary label space through it."""

import pluggy

hookspec = pluggy.HookspecMarker("ferbench")


@hookspec
def ferbench_ldl_register_spaces(register):
    """Give auxiliary spaces to LDLVA and LDL-ALSG: `register(name, space)` once per space.

    `space` is a `ferbench_ldl.AuxSpace`: its `coordinates(ctx, arg)` returns one finite
    point per training sample, float [N, D], from which the neighbour graph is built.
    A name registered twice keeps the first registrant's space; the later one is listed
    by `ferbench_ldl.spaces.registry().refused`.
    """
