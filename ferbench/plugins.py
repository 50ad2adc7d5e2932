"""The plugin manager: built-ins first, then entry points; one broken plugin breaks nothing else."""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, unknown_name

ENTRY_POINT_GROUP = "ferbench"
DEFAULT_PLUGINS = (
    "ferbench.datasets.builtin",
    "ferbench.methods.builtin",
    "ferbench.protocols",
)
KINDS = {"methods": "ferbench_register_methods",
         "datasets": "ferbench_register_datasets",
         "protocols": "ferbench_register_protocols"}


@dataclass
class Provided:
    """One registered thing and the plugin that provided it."""

    name: str
    obj: Any
    plugin: str
    version: str


@dataclass
class PluginInfo:
    name: str
    version: str
    builtin: bool
    registered: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """Everything the installed plugins provide, and what went wrong loading them."""

    methods: dict[str, Provided] = field(default_factory=dict)
    datasets: dict[str, Provided] = field(default_factory=dict)
    protocols: dict[str, Provided] = field(default_factory=dict)
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    # (kind, name) → the plugins that all claim it: which one a run would get is the
    # accident of load order, so none is used.
    contested: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def get(self, kind: str, name: str):
        table = getattr(self, kind)
        if name not in table:
            raise unknown_name(kind.rstrip("s"), name, table)
        claimants = self.contested.get((kind, name))
        if claimants:
            raise ConfigError(f"{kind[:-1]} {name!r} is registered by more than one plugin "
                              f"({', '.join(claimants)}): uninstall all but one")
        return table[name].obj


def _version_of(module_name: str) -> str:
    from . import __version__

    if module_name.startswith("ferbench."):
        return __version__
    top = module_name.split(".")[0]
    try:
        dists = metadata.packages_distributions().get(top, [])
        return metadata.version(dists[0]) if dists else "unknown"
    except Exception:
        return "unknown"


def _entry_points():
    only = os.environ.get("FERBENCH_LOAD_PLUGINS")
    wanted = None if only is None else {p.strip() for p in only.split(",") if p.strip()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if wanted is None or ep.name in wanted or (ep.dist and ep.dist.name in wanted):
            yield ep


def build_registry(extra_plugins=()) -> Registry:
    """Load built-ins, entry points and `extra_plugins` (objects or modules), call every hook."""
    pm = pluggy.PluginManager("ferbench")
    pm.add_hookspecs(hookspecs)
    reg = Registry()

    owner: dict[str, str] = {}  # pluggy name (one per entry point) → distribution

    def add(plugin, name, version, builtin, key=None):
        info = reg.plugins.setdefault(name, PluginInfo(name, version, builtin))
        key = key or name
        owner[key] = name
        try:
            pm.register(plugin, name=key)
        except Exception as e:  # a hookimpl that does not match its spec
            info.errors.append("cannot register: " + " ".join(str(e).split()))

    for mod in DEFAULT_PLUGINS:
        add(importlib.import_module(mod), mod, _version_of(mod), True)
    for ep in _entry_points():
        version = ep.dist.version if ep.dist else "unknown"
        name = ep.dist.name if ep.dist else ep.name
        try:
            plugin = ep.load()
        except Exception as e:
            info = reg.plugins.setdefault(name, PluginInfo(name, version, False))
            info.errors.append(f"failed to load entry point {ep.name} = {ep.value}: "
                               f"{type(e).__name__}: {e}")
            continue
        add(plugin, name, version, False, key=f"{name}:{ep.name}")
    for i, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        add(plugin, name, "unknown", False)

    # Call each plugin's implementation on its own so one that raises is isolated;
    # registration order is the plugin order above (pluggy's own order is LIFO).
    order = list(reg.plugins)
    for kind, hook_name in KINDS.items():
        impls = getattr(pm.hook, hook_name).get_hookimpls()
        impls.sort(key=lambda im: order.index(owner[im.plugin_name]))
        for impl in impls:
            info = reg.plugins[owner[impl.plugin_name]]
            _call(impl, kind, reg, info)
    return reg


def _call(impl, kind, reg: Registry, info: PluginInfo):
    table = getattr(reg, kind)
    staged: list[tuple[str, Any]] = []

    def register(name, obj):
        staged.append((str(name), obj))

    try:
        impl.function(**{arg: register for arg in impl.argnames})
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        info.errors.append(f"{KINDS[kind]} raised {type(e).__name__}: {e} "
                           f"({os.path.basename(where.filename)}:{where.lineno})")
        return
    for name, obj in staged:
        if name in table:
            holder = table[name].plugin
            if reg.plugins[holder].builtin:
                info.errors.append(f"{kind[:-1]} {name!r} is already registered by "
                                   f"{holder}; skipped")
                continue
            claimants = reg.contested.setdefault((kind, name), [holder])
            claimants.append(info.name)
            info.errors.append(f"{kind[:-1]} {name!r} is also registered by {holder}: "
                               f"neither is used until one is uninstalled")
            reg.plugins[holder].errors.append(f"{kind[:-1]} {name!r} is also registered by "
                                              f"{info.name}: neither is used until one is "
                                              f"uninstalled")
            continue
        table[name] = Provided(name, obj, info.name, info.version)
        info.registered.setdefault(kind, []).append(name)


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def describe(reg: Registry | None = None) -> dict:
    """What `ferbench list --json` prints: every provided name and every plugin's state."""
    reg = reg or registry()

    def rows(table):
        return [{"name": p.name, "plugin": p.plugin, "version": p.version}
                for p in table.values()]

    return {
        "methods": rows(reg.methods), "datasets": rows(reg.datasets),
        "protocols": rows(reg.protocols),
        "plugins": [{"name": p.name, "version": p.version, "builtin": p.builtin,
                     "registered": p.registered, "errors": p.errors}
                    for p in reg.plugins.values()],
    }
