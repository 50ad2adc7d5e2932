"""The hooks a ferbench plugin implements. The register hooks receive a `register` callback.

Every hook is called once per plugin, built-ins first (in `DEFAULT_PLUGINS`
order), then entry points of the group ``ferbench``. A plugin that raises
inside a hook is reported by `ferbench list` and what it registered in that
hook is dropped; every other plugin keeps working. Names are global: a name
already taken is reported against the later plugin, and that registration is
skipped, so a third party can never replace a built-in.

This module imports nothing heavy: a plugin's hook module imports `hookimpl`
from here (through ``ferbench``) without loading torch.
"""

import pluggy

hookspec = pluggy.HookspecMarker("ferbench")
hookimpl = pluggy.HookimplMarker("ferbench")


@hookspec
def ferbench_add_hookspecs(pluginmanager):
    """Call ``pluginmanager.add_hookspecs(module_or_class)`` to add hooks of this plugin's own.

    Runs once per plugin, right after that plugin is registered and before any
    ``ferbench_register_*`` hook runs, in plugin order, so every later plugin's
    implementations are checked against the new specs. ``pluginmanager`` is
    the `pluggy.PluginManager` the registry keeps; the plugin calls its hooks
    later through `ferbench.plugins.plugin_manager().hook`. Each implementation
    is called on its own and returns nothing. A spec name should start with
    ``ferbench_`` and the plugin's name (``ferbench_ldl_register_spaces``).
    An error raised here is this plugin's, listed by `ferbench list`; an
    implementation (of any plugin) that does not match a spec added here is
    reported against the plugin that implements it, which is then not
    registered at all, as if the spec had been there from the start.
    """


@hookspec
def ferbench_register_methods(register):
    """Call ``register(name, MethodClass)`` for each method this plugin provides.

    ``MethodClass`` is a subclass of `ferbench.Method` whose ``Config`` is a
    dataclass subclassing `ferbench.MethodConfig`; the harness builds
    ``MethodClass(config)`` with a ``MethodClass.Config`` instance
    (docs/design.md, section 2). Anything else is reported against this plugin and skipped. One
    package may register several names (``esr``, ``esr-div``). Heavy imports
    belong in ``build``, not here. Collected: every plugin's implementation is
    called, each on its own.
    """


@hookspec
def ferbench_register_datasets(register):
    """Call ``register(name, adapter)`` for each dataset this plugin can read.

    ``adapter`` is a `ferbench.datasets.DatasetAdapter` instance (anything
    else is reported against this plugin and skipped): it detects its layouts
    under a root folder and returns `Samples` per split. Collected: every
    plugin's implementation is called, each on its own.
    """


@hookspec
def ferbench_register_protocols(register):
    """Call ``register(family, protocol)`` for each protocol family this plugin adds.

    ``protocol`` is a `ferbench.protocols.Protocol` instance (anything else is
    reported against this plugin and skipped). A family takes parameters
    (``noise`` takes ``rate`` and ``seed``); short forms on the command line
    (``noise30``) are parsed by the family itself. Collected: every plugin's
    implementation is called, each on its own.
    """


@hookspec
def ferbench_register_views(register):
    """Call ``register(name, view)`` for each augmentation view this plugin adds.

    ``view`` is a `ferbench.View`: ``View(fn, defaults, ranges)``, where
    ``fn(images, gen, **params)`` turns a uint8 batch [B, H, W, C] on the
    training device into floats [B, C, H, W] in [0, 1] (C is 1 or 3; grey is
    repeated to 3 channels after it), drawing every random number from the
    torch generator ``gen`` so a run is reproducible. ``defaults`` maps each
    parameter to its default (its type is the type a config must give) and
    ``ranges`` a parameter to its accepted (low, high). A method trains on it
    by name: ``views=[name]`` or ``views=[[name, {param: value}]]``. Anything
    but a `View` is reported against this plugin and skipped. Collected: every
    plugin's implementation is called, each on its own.
    """
