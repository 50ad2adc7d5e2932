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
from .errors import ConfigError, PluginError, unknown_name

ENTRY_POINT_GROUP = "ferbench"
DEFAULT_PLUGINS = (
    "ferbench.datasets.builtin",
    "ferbench.methods.builtin",
    "ferbench.protocols",
    "ferbench.data.views",
)
KINDS = {"methods": "ferbench_register_methods",
         "datasets": "ferbench_register_datasets",
         "protocols": "ferbench_register_protocols",
         "views": "ferbench_register_views"}
# What each kind must be: (module, class, whether a subclass or an instance is registered).
# Imported only when a registration is checked, since `ferbench.method` loads torch.
EXPECTED = {"methods": ("ferbench.method", "Method", "subclass"),
            "datasets": ("ferbench.datasets", "DatasetAdapter", "instance"),
            "protocols": ("ferbench.protocols", "Protocol", "instance"),
            "views": ("ferbench.data.views", "View", "instance")}
_PLUGGY = os.path.dirname(pluggy.__file__)


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
    entry_points: list[str] = field(default_factory=list)
    # The first exception the plugin raised: `--debug` shows its traceback.
    failure: BaseException | None = field(default=None, repr=False, compare=False)

    def may_provide(self, name: str) -> bool:
        """Whether `name` looks like this plugin's (its distribution or an entry point, with
        or without the `ferbench-` prefix): a name a failed plugin would have registered."""
        def norm(text):
            text = text.lower().replace("_", "-")
            return text[len("ferbench-"):] if text.startswith("ferbench-") else text
        return norm(name) in {norm(n) for n in (self.name, *self.entry_points)}


@dataclass
class Registry:
    """Everything the installed plugins provide, what went wrong loading them, and the plugin
    manager that loaded them (`pm`), through which plugins call hooks they specified."""

    methods: dict[str, Provided] = field(default_factory=dict)
    datasets: dict[str, Provided] = field(default_factory=dict)
    protocols: dict[str, Provided] = field(default_factory=dict)
    views: dict[str, Provided] = field(default_factory=dict)
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    # (kind, name) → the plugins that all claim it: which one a run would get is the
    # accident of load order, so none is used.
    contested: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    pm: pluggy.PluginManager | None = field(default=None, repr=False, compare=False)

    def get(self, kind: str, name: str):
        table = getattr(self, kind)
        if name not in table:
            failed = [p for p in self.plugins.values() if p.errors and not p.builtin
                      and kind not in p.registered]
            match = next((p for p in failed if p.may_provide(name)), None)
            if match is not None:
                raise PluginError(f"{kind[:-1]} {name!r} comes from plugin {match.name}, which "
                                  f"failed: {match.errors[0]}") from match.failure
            err = unknown_name(kind.rstrip("s"), name, table)
            if failed:  # the name may be one of theirs: say so rather than only "unknown"
                err = ConfigError(f"{err}; plugins that failed to load, which may provide it: "
                                  f"{', '.join(p.name for p in failed)} (ferbench list says why)")
            raise err
        claimants = self.contested.get((kind, name))
        if claimants:
            raise ConfigError(f"{kind[:-1]} {name!r} is registered by more than one plugin "
                              f"({', '.join(claimants)}): uninstall all but one")
        return table[name].obj


class _Manager(pluggy.PluginManager):
    """pluggy's manager, except that a spec added late blames the implementations it refuses.

    pluggy's `add_hookspecs` raises at the first registered implementation that does not
    match, which would make it the error of the plugin adding the spec and leave that
    plugin's other specs unadded. Here each such implementation's plugin is unregistered
    (as if the spec had been there when it registered) and listed in `refused`.
    """

    def __init__(self):
        super().__init__("ferbench")
        self.refused: list[tuple[str, str]] = []  # (pluggy name, why)

    def add_hookspecs(self, module_or_class) -> None:
        names = [n for n in dir(module_or_class)
                 if self.parse_hookspec_opts(module_or_class, n) is not None]
        # Checked before anything changes: a spec replacing one in force could otherwise
        # refuse the built-ins' implementations of it.
        taken = [n for n in names if getattr(self.hook, n, None) is not None
                 and getattr(self.hook, n).has_spec()]
        if taken:
            raise ValueError(f"hook {', '.join(taken)} is already specified")
        probe = pluggy.PluginManager(self.project_name)
        probe.add_hookspecs(module_or_class)
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            try:
                probe.register(plugin, name=name)
            except pluggy.PluginValidationError as e:
                self.unregister(plugin, name)
                self.refused.append((name, " ".join(str(e).split())))
        super().add_hookspecs(module_or_class)


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
    pm = _Manager()
    pm.add_hookspecs(hookspecs)
    reg = Registry(pm=pm)

    owner: dict[str, str] = {}  # pluggy name (one per entry point) → distribution

    def add(plugin, name, version, builtin, key=None):
        info = reg.plugins.setdefault(name, PluginInfo(name, version, builtin))
        key = key or name
        owner[key] = name
        try:
            pm.register(plugin, name=key)
        except Exception as e:  # a hookimpl that does not match its spec
            info.errors.append("cannot register: " + " ".join(str(e).split()))
            return
        # Right after registering, so the specs a plugin adds are in force for every plugin
        # that follows, and before any register hook, which may call them.
        for impl in pm.hook.ferbench_add_hookspecs.get_hookimpls():
            if impl.plugin_name == key:
                _invoke(impl, "ferbench_add_hookspecs", info, pluginmanager=pm)
        for refused, why in pm.refused:
            reg.plugins.get(owner.get(refused), info).errors.append(
                f"cannot register: {why} (hookspec added by {name})")
        pm.refused.clear()
        for other, _ in pm.list_name_plugin():  # plugins this one registered itself
            owner.setdefault(other, name)

    for mod in DEFAULT_PLUGINS:
        add(importlib.import_module(mod), mod, _version_of(mod), True)
    for ep in _entry_points():
        version = ep.dist.version if ep.dist else "unknown"
        name = ep.dist.name if ep.dist else ep.name
        info = reg.plugins.setdefault(name, PluginInfo(name, version, False))
        info.entry_points.append(ep.name)
        try:
            plugin = ep.load()
        except Exception as e:
            info.errors.append(f"failed to load entry point {ep.name} = {ep.value}: "
                               f"{type(e).__name__}: {e}")
            info.failure = info.failure or e
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
            _call(impl, kind, reg, reg.plugins[owner[impl.plugin_name]])
    return reg


def _invoke(impl, hook_name: str, info: PluginInfo, **kwargs) -> bool:
    """Call one implementation with the arguments it names; what it raises is its plugin's error."""
    try:
        impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        return True
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)
        # Name the plugin's line, not the pluggy call a misused plugin manager raised in.
        own = [f for f in frames if not f.filename.startswith(_PLUGGY)
               and f.filename != __file__] or frames
        info.errors.append(f"{hook_name} raised {type(e).__name__}: {e} "
                           f"({os.path.basename(own[-1].filename)}:{own[-1].lineno})")
        info.failure = info.failure or e
        return False


def _call(impl, kind, reg: Registry, info: PluginInfo):
    table = getattr(reg, kind)
    staged: list[tuple[str, Any]] = []

    def register(name, obj):
        staged.append((str(name), obj))

    if not _invoke(impl, KINDS[kind], info, register=register):
        return
    for name, obj in staged:
        wrong = _misfit(kind, name, obj)
        if wrong:
            info.errors.append(wrong)
            continue
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


def _misfit(kind: str, name: str, obj) -> str | None:
    """Why `obj` cannot be registered as a `kind`, or None: a wrong object is refused here,
    naming its plugin, rather than failing in the middle of someone's run."""
    module, cls_name, how = EXPECTED[kind]
    expected = getattr(importlib.import_module(module), cls_name)
    ok = (isinstance(obj, type) and issubclass(obj, expected) if how == "subclass"
          else isinstance(obj, expected))
    if not ok:
        return f"{kind[:-1]} {name!r} is not a {cls_name} {how} (got {_kind_of(obj)})"
    if kind == "methods":
        from .method import MethodConfig

        config = getattr(obj, "Config", None)
        if not (isinstance(config, type) and issubclass(config, MethodConfig)):
            return (f"method {name!r}: its Config is not a MethodConfig subclass "
                    f"(got {_kind_of(config)})")
        # A subclass without @dataclass inherits the parent's fields and silently ignores
        # its own, so an override of them would never reach the method.
        if "__dataclass_fields__" not in vars(config):
            return (f"method {name!r}: its Config {config.__qualname__} is not a dataclass "
                    f"(add @dataclass)")
    return None


def _kind_of(obj) -> str:
    if isinstance(obj, type):
        return f"class {obj.__qualname__}"
    if callable(obj) and hasattr(obj, "__code__"):
        return "function"
    return f"{type(obj).__qualname__} object"


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide registry's plugin manager: a plugin calls a hook it specified (through
    `ferbench_add_hookspecs`) as ``plugin_manager().hook.<hook name>(**kwargs)``."""
    return registry().pm


def describe(reg: Registry | None = None) -> dict:
    """What `ferbench list --json` prints: every provided name and every plugin's state."""
    reg = reg or registry()

    def rows(table):
        return [{"name": p.name, "plugin": p.plugin, "version": p.version}
                for p in table.values()]

    return {
        **{kind: rows(getattr(reg, kind)) for kind in KINDS},
        "plugins": [{"name": p.name, "version": p.version, "builtin": p.builtin,
                     "registered": p.registered, "errors": p.errors}
                    for p in reg.plugins.values()],
    }
