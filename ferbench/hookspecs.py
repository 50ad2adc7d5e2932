"""The hooks a ferbench plugin implements. Each receives a `register` callback.

Every hook is called once per plugin, built-ins first (in `DEFAULT_PLUGINS`
order), then entry points of the group ``ferbench``. A plugin that raises
inside a hook is reported by `ferbench list` and what it registered in that
hook is dropped; every other plugin keeps working. Names are global: a name
already taken is reported against the later plugin, and that registration is
skipped, so a third party can never replace a built-in.
"""

import pluggy

hookspec = pluggy.HookspecMarker("ferbench")
hookimpl = pluggy.HookimplMarker("ferbench")


@hookspec
def ferbench_register_methods(register):
    """Call ``register(name, MethodClass)`` for each method this plugin provides.

    The harness builds ``MethodClass(config)`` with a ``MethodClass.Config``
    dataclass instance (DESIGN.md section 4). One package may register several
    names (``esr``, ``esr-div``). Heavy imports belong in ``build``, not here.
    """


@hookspec
def ferbench_register_datasets(register):
    """Call ``register(name, adapter)`` for each dataset this plugin can read.

    ``adapter`` is a `ferbench.datasets.DatasetAdapter` instance: it detects
    its layouts under a root folder and returns `Samples` per split.
    """


@hookspec
def ferbench_register_protocols(register):
    """Call ``register(family, protocol)`` for each protocol family this plugin adds.

    A family takes parameters (``noise`` takes ``rate`` and ``seed``); short
    forms on the command line (``noise30``) are parsed by the family itself.
    """
